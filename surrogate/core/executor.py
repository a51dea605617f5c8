"""Independent solver tasks on local processes or a Dask cluster: one case setting for every family.

    executor: local                       # default: `workers` local processes (1: in this process)
    executor: {dask: local}               # a distributed.LocalCluster with `workers` workers
    executor: {dask: "tcp://host:8786"}   # an existing Dask cluster

Tasks are pure: each one gets everything it needs (its seed included) and returns its result; the
calling process writes the files, so workers need no shared file system and the data do not depend
on which executor ran them or in which order. A task that raises is retried `retries` times, then
the whole map stops with an error naming it; results already written are kept, and a rerun picks
up from there.
"""
from __future__ import annotations

import multiprocessing
import re
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Annotated, Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, field_validator

ADDRESS = re.compile(r"(tcp|tls|ucx|inproc)://\S+")


class DaskExecutor(BaseModel):
    model_config = ConfigDict(extra="forbid")  # as every case section (core.case imports this one)

    dask: str = Field(..., description='"local" (a LocalCluster on this machine) or a scheduler address, '
                                       'e.g. "tcp://host:8786"')
    timeout: float = Field(10.0, gt=0, description="seconds to wait for the scheduler")

    @field_validator("dask")
    @classmethod
    def _address(cls, value: str) -> str:
        if value != "local" and not ADDRESS.fullmatch(value):
            raise ValueError('allowed: "local" or a scheduler address such as "tcp://host:8786"')
        return value


ALLOWED = 'allowed: local, {dask: local} or {dask: "tcp://host:8786"} (optionally with timeout: seconds)'


def parse_executor(value: Any) -> "str | DaskExecutor":
    """One message for any wrong executor setting, instead of one per member of the union."""
    if value == "local" or isinstance(value, DaskExecutor):
        return value
    if not isinstance(value, dict):
        raise ValueError(ALLOWED)
    try:
        return DaskExecutor.model_validate(value)
    except ValidationError as err:
        first = sorted(err.errors(), key=lambda e: e["type"] != "extra_forbidden")[0]  # a misspelt key first
        where = ".".join(str(p) for p in first["loc"])
        if first["type"] == "value_error":  # the address check says what is allowed itself
            raise ValueError(f"{where} = {first['input']!r}: {first['ctx']['error']}") from None
        what = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        raise ValueError(f"{where}: {what}; {ALLOWED}") from None


ExecutorSetting = Annotated[Any, PlainValidator(parse_executor)]


class TaskFailed(RuntimeError):
    """A solver task kept failing after its retries."""


def _describe(executor: ExecutorSetting, workers: int) -> str:
    if executor == "local":
        return "this process" if workers <= 1 else f"{workers} local processes"
    return f"Dask ({'LocalCluster, %d workers' % workers if executor.dask == 'local' else executor.dask})"


def map_tasks(fn: Callable[[Any], Any], tasks: Sequence[Any], names: Sequence[str],
              on_result: Callable[[int, Any], None], executor: ExecutorSetting = "local", workers: int = 1,
              retries: int = 2, log: Callable[[str], None] = print) -> None:
    """Run fn(task) for every task; `on_result(i, result)` is called in this process as each one finishes."""
    if not tasks:
        return
    log(f"data: {len(tasks)} solver task(s) on {_describe(executor, workers)}")
    t0 = time.perf_counter()
    done = 0

    def finished(i: int, result: Any) -> None:
        nonlocal done
        on_result(i, result)
        done += 1
        if done % max(1, len(tasks) // 10) == 0 or done == len(tasks):
            log(f"data: {done}/{len(tasks)} tasks ({time.perf_counter() - t0:.0f} s)")

    if executor == "local":
        _map_local(fn, tasks, names, finished, workers, retries, log)
    else:
        _map_dask(fn, tasks, names, finished, executor, workers, retries)


def _map_local(fn, tasks, names, finished, workers, retries, log) -> None:
    attempts = [0] * len(tasks)

    def failed(i: int, err: BaseException) -> bool:
        attempts[i] += 1
        if attempts[i] > retries:
            raise TaskFailed(f"solver task {names[i]} failed {attempts[i]} times; last error: "
                             f"{type(err).__name__}: {err}") from err
        log(f"data: task {names[i]} failed ({type(err).__name__}: {err}); retry {attempts[i]} of {retries}")
        return True

    if workers <= 1:
        for i, task in enumerate(tasks):
            while True:
                try:
                    result = fn(task)
                except Exception as err:
                    failed(i, err)
                    continue
                finished(i, result)
                break
        return
    with ProcessPoolExecutor(max_workers=workers) as pool:
        running = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
        while running:
            ready, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in ready:
                i = running.pop(future)
                err = future.exception()
                if err is None:
                    finished(i, future.result())
                elif failed(i, err):
                    running[pool.submit(fn, tasks[i])] = i


def _map_dask(fn, tasks, names, finished, executor: DaskExecutor, workers, retries) -> None:
    from surrogate.core.case import CaseError

    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise CaseError("executor {dask: ...} needs Dask: pip install 'surrogate[dask]'") from err
    cluster = None
    if executor.dask == "local":
        import dask

        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in its workers; glibc then maps and unmaps every
        # array above 64 KiB, which made numpy solver steps about 10x slower here. Keep glibc's default.
        # Workers are forked from a fork server that Dask starts with itself and numpy imported, instead of
        # each spawned worker importing them again. Forking this process directly would be faster still,
        # but it runs Dask's event loop threads, and a worker forked from it hung. A worker still imports
        # the solver's module on its first task, so those modules keep torch out of their imports.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                              "distributed.worker.multiprocessing-method": method}):
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
        address: Any = cluster
    else:
        address = executor.dask
    try:
        try:
            client = Client(address, timeout=executor.timeout)
        except (OSError, TimeoutError) as err:
            raise CaseError(f"executor: cannot reach the Dask scheduler at {executor.dask!r} within "
                            f"{executor.timeout:g} s ({type(err).__name__}); start it with `dask scheduler` and "
                            "workers with `dask worker ADDRESS`, or use executor: local") from None
        with client:
            futures = client.map(fn, tasks, key=[f"surrogate-{n}-{time.time_ns()}" for n in names],
                                 retries=retries, pure=False)
            index = {f.key: i for i, f in enumerate(futures)}
            for future in as_completed(futures):
                i = index[future.key]
                if future.status != "finished":
                    err = future.exception()
                    raise TaskFailed(f"solver task {names[i]} failed {retries + 1} times on Dask; last error: "
                                     f"{type(err).__name__}: {err}") from err
                finished(i, future.result())
                future.release()
    finally:
        if cluster is not None:
            cluster.close()

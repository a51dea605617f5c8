"""The runner: data -> fit -> evaluate -> report, with caching, resume and one folder per run.

A family provides a `Pipeline` subclass; the runner owns everything that is the same for all
families: where files go, which stages are already done, seeds, device, logging and the summary.
"""
from __future__ import annotations

import datetime as _dt
import os
import resource
import shutil
import sys
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

import xarray as xr

from surrogate.core import distributed
from surrogate.core.case import Case
from surrogate.core.report import metrics_table
from surrogate.core.store import (
    RunFolder,
    environment,
    git_commit,
    list_runs,
    point_latest,
    read_json,
    read_netcdf,
    write_json,
    write_netcdf,
    write_yaml,
)
from surrogate.core.training import resolve_device, seed_everything

STAGES = ("data", "fit", "evaluate", "report")


class Pipeline(ABC):
    """One family's work, stage by stage. Subclasses set `Case` (their schema) and `family`."""

    Case: type[Case]
    family: str

    def __init__(self, case: Case, run: RunFolder, log: Callable[[str], None] = print):
        self.case, self.run, self.log = case, run, log
        self.device = distributed.device_for(resolve_device(case.device))

    @classmethod
    @abstractmethod
    def data_config(cls, case: Case) -> dict[str, Any]:
        """The part of the case that determines the solver data (hashed for the cache)."""

    @abstractmethod
    def generate_data(self, out: Path) -> None:
        """Run the solver and write NetCDF files into `out`; skip files that already exist."""

    @abstractmethod
    def fit(self, data: Path) -> None:
        """Train into run/model (checkpoints in run/checkpoints, resumed when present)."""

    @abstractmethod
    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        """Return the metrics (``{"headline": ..., "rows": [...]}``) and the predictions dataset."""

    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        """Draw figures into run/figures."""

    @classmethod
    def batch_sizes(cls, case: Case) -> dict[str, int]:
        """Global batch sizes of the case's training, by key path (checked against the torchrun world size)."""
        return {}

    @classmethod
    @abstractmethod
    def load(cls, run: RunFolder, device: str = "cpu"):
        """The trained surrogate of a finished run."""


class Log:
    """Prints to the console and appends to the run's log.txt."""

    def __init__(self, file: Path | None = None, quiet: bool = False):
        self.file, self.quiet = file, quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(message, flush=True)
        if self.file is not None:
            with open(self.file, "a") as fh:
                fh.write(message + "\n")


def new_run_id(case: Case) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{case.digest()[:6]}"


def find_resumable(case_dir: Path, digest: str) -> RunFolder | None:
    """The newest unfinished run of exactly this resolved case that no live process holds."""
    for run in list_runs(case_dir.parent):
        if run.path.parent != case_dir:
            continue
        meta = run.meta()
        if meta.get("case_digest") == digest and meta.get("status") != "finished" and not run.is_locked():
            return run
    return None


def cached_data(pipeline_cls: type[Pipeline], case: Case, results: Path, make: Callable[[Path], None],
                log: Callable[[str], None]) -> Path:
    """The solver data for this configuration: reused when cached, generated (resumably) when not."""
    from surrogate.core.case import stable_hash

    key = stable_hash(pipeline_cls.data_config(case))
    folder = results / ".cache" / pipeline_cls.family / key
    done = folder / ".complete"
    if done.exists():
        log(f"data: reusing cached solver data {folder}")
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    log(f"data: running the solver into {folder}")
    t0 = time.perf_counter()
    make(folder)
    done.write_text(f"{time.perf_counter() - t0:.1f} s\n")
    return folder


def link_data(cache: Path, run_data: Path) -> None:
    """Hard-link the cached files into the run folder (copy where links are not possible)."""
    run_data.mkdir(parents=True, exist_ok=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for f in [*cache.glob("*.nc"), *cache.glob("*.zarr")]:
        dst = run_data / f.name
        if dst.exists():
            continue
        if f.is_dir():  # a Zarr store: the same tree, its files linked
            shutil.copytree(f, dst, copy_function=link)
        else:
            link(f, dst)


def peak_memory_mib() -> float:
    """Peak resident memory of this process (and finished children), in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0


def follow_main_rank(case: Case, pipeline_cls: type[Pipeline]) -> RunFolder:
    """A rank > 0 under torchrun: train beside rank 0 in a scratch folder, write nothing to the run.

    Rank 0 owns the run folder and the solver data. The scratch folder starts as a copy of the run's
    checkpoints and models, so every rank resumes from the same state; DDP keeps the weights equal.
    """
    import tempfile

    shared = distributed.broadcast(None)
    main = RunFolder(Path(shared["run"]))
    if shared["fit"]:
        with tempfile.TemporaryDirectory(prefix=f"surrogate-rank{distributed.rank()}-") as tmp:
            scratch = RunFolder(Path(tmp))
            for sub in ("checkpoints", "model"):
                if (main.path / sub).exists():
                    shutil.copytree(main.path / sub, scratch.path / sub)
            (scratch.path / "data").symlink_to(main.path / "data")
            distributed.barrier()
            seed_everything(case.seed)
            pipeline_cls(case, scratch, Log(None, quiet=True)).fit(scratch.path / "data")
    return main


def run_case(case: Case, results: str | Path = "results", fresh: bool = False, quiet: bool = False) -> RunFolder:
    """Run (or resume) a validated case; returns its run folder. Under torchrun, rank 0 runs the case
    and the other ranks join its training (`follow_main_rank`)."""
    from surrogate.core import registry

    results = Path(results)
    pipeline_cls = registry.pipeline_class(case.pipeline)
    if distributed.init_from_environment():
        for key, size in pipeline_cls.batch_sizes(case).items():  # before anything is written, on every rank
            distributed.check_divides(size, key)
        if not distributed.is_main():
            return follow_main_rank(case, pipeline_cls)
    case_dir = results / case.name
    digest = case.digest()
    run = None if fresh else find_resumable(case_dir, digest)
    resumed = run is not None
    if run is None:
        run = RunFolder(case_dir / new_run_id(case))
        run.path.mkdir(parents=True, exist_ok=False)
    log = Log(run.path / "log.txt", quiet=quiet)
    run.lock()
    started = time.perf_counter()
    meta = run.meta()
    run.update_meta(
        case=case.name, family=pipeline_cls.family, profile=case.profile, case_digest=digest, seed=case.seed,
        status="running", started=meta.get("started") or _dt.datetime.now().isoformat(timespec="seconds"),
        resumed=meta.get("resumed", 0) + int(resumed), git_commit=git_commit(), versions=environment(),
        stages_done=meta.get("stages_done", []), world_size=distributed.world_size(),
    )
    write_yaml(run.case_file, {"name": case.name, "profile": case.profile, **case.resolved()})
    log(f"{'resuming' if resumed else 'starting'} run {run.path}")
    try:
        seed_everything(case.seed)
        pipeline = pipeline_cls(case, run, log)
        run.update_meta(device=str(pipeline.device))
        cache = cached_data(pipeline_cls, case, results, pipeline.generate_data, log)
        link_data(cache, run.path / "data")
        data = run.path / "data"
        log(f"data: ready (peak memory so far {peak_memory_mib():.0f} MiB)")
        if distributed.active():  # the other ranks wait for this: where the run is, and whether to train
            distributed.broadcast({"run": str(run.path), "fit": not run.stage_done("fit")})
            if not run.stage_done("fit"):
                distributed.barrier()
                log(f"fit: {distributed.world_size()} processes (torchrun, DistributedDataParallel)")
        if not run.stage_done("fit"):
            seed_everything(case.seed)
            pipeline.fit(data)
            run.mark_stage("fit")
            log(f"fit: done (peak memory so far {peak_memory_mib():.0f} MiB)")
        if not run.stage_done("evaluate"):
            seed_everything(case.seed + 1)
            metrics, predictions = pipeline.evaluate(data)
            metrics = {"case": case.name, "family": pipeline_cls.family, "profile": case.profile, **metrics}
            write_netcdf(predictions, run.predictions_file)
            write_json(run.metrics_file, metrics)
            run.mark_stage("evaluate")
        metrics = read_json(run.metrics_file)
        if not run.stage_done("report"):
            pipeline.report(data, metrics, read_netcdf(run.predictions_file))
            run.mark_stage("report")
    except KeyboardInterrupt:
        run.update_meta(status="interrupted", ended=_dt.datetime.now().isoformat(timespec="seconds"))
        run.unlock()
        log(f"interrupted; run `surrogate run` with the same case to resume {run.path}")
        raise
    except BaseException as err:
        run.update_meta(status="failed", error=f"{type(err).__name__}: {err}",
                        ended=_dt.datetime.now().isoformat(timespec="seconds"))
        run.unlock()
        raise
    elapsed = time.perf_counter() - started
    run.update_meta(status="finished", ended=_dt.datetime.now().isoformat(timespec="seconds"),
                    wall_seconds=round(elapsed + meta.get("wall_seconds", 0.0), 1),
                    peak_rss_mib=round(peak_memory_mib(), 1))
    run.unlock()
    point_latest(run)
    log("")
    log(metrics_table(metrics, metrics.get("table_metrics")))
    head = metrics.get("headline", {})
    if head:
        log(f"\nheadline: {head['method']} {head['metric']} = {head['value']:.4g}")
    log(f"run folder: {run.path}  ({elapsed:.0f} s, peak memory {peak_memory_mib():.0f} MiB)")
    sys.stdout.flush()
    return run

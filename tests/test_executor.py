"""Solver tasks on local processes and on Dask give the same data; failures are retried, then reported.
NetCDF and Zarr hold the same data."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from surrogate.cli import main
from surrogate.core import registry
from surrogate.core.case import CaseError, load_case
from surrogate.core.executor import DaskExecutor, TaskFailed, map_tasks
from surrogate.core.store import RunFolder, read_data, read_json

CASES = Path(__file__).resolve().parents[1] / "cases"
VOLATILE = {"history", "solve_seconds", "wall_seconds"}  # when a file was written, how long its solve took


@pytest.fixture(autouse=True, scope="module")
def plain_main_module():
    """Worker processes are spawned and re-import __main__; after the app tests (streamlit runs a page
    as __main__) that would be a page script. Spawn them from a bare __main__, as the CLI would."""
    import types

    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    yield
    sys.modules["__main__"] = main


@pytest.fixture(scope="module")
def cluster(plain_main_module):
    distributed = pytest.importorskip("distributed")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    import dask

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0")
    with cluster:
        yield cluster


def generate(case_file: str, out: Path, *overrides: str) -> dict[str, xr.Dataset]:
    case = load_case(CASES / case_file, "smoke", list(overrides))
    out.mkdir(parents=True)
    registry.pipeline_class(case.pipeline)(case, RunFolder(out), log=lambda m: None).generate_data(out)
    return {p.stem: read_data(p.with_suffix(".nc")) for p in sorted([*out.glob("*.nc"), *out.glob("*.zarr")])}


def same_data(a: dict[str, xr.Dataset], b: dict[str, xr.Dataset]) -> bool:
    assert a and list(a) == list(b)
    for name in a:
        da, db = a[name].copy(), b[name].copy()
        for ds in (da, db):
            ds.attrs = {k: v for k, v in ds.attrs.items() if k not in VOLATILE}
        if not da.identical(db):
            return False
        if any(da[v].values.tobytes() != db[v].values.tobytes() for v in da.variables):
            return False
    return True


@pytest.mark.parametrize("case_file", ["lorenz96_mno.yaml", "mmgp.yaml", "pig_allen_cahn.yaml", "dragonfly_smart.yaml",
                                       "prose.yaml"])
def test_a_dask_cluster_gives_the_same_data_as_local_processes(case_file, cluster, tmp_path):
    local = generate(case_file, tmp_path / "local", "workers=2")
    dask = generate(case_file, tmp_path / "dask", f"executor.dask={cluster.scheduler_address}")
    assert same_data(local, dask)


def test_a_local_dask_cluster_is_started_and_closed_by_the_case(tmp_path):
    pytest.importorskip("distributed")
    serial = generate("pig_helmholtz.yaml", tmp_path / "serial")
    dask = generate("pig_helmholtz.yaml", tmp_path / "dask", "executor.dask=local", "workers=2")
    assert same_data(serial, dask)


def test_solver_tasks_are_defined_where_a_worker_imports_no_torch():
    """A Dask worker imports the module of the function it runs; torch there costs seconds per worker.
    (PINN references are one task per case, computed by the problem classes that also hold the residuals.)"""
    import subprocess

    code = ("import sys\n"
            "from surrogate.dragonfly.scenarios import simulate_task\n"
            "from surrogate.lorenz96.data import simulate_chunk\n"
            "from surrogate.mmgp.data import solve_sample\n"
            "from surrogate.prose.data import make_dataset_task\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    from surrogate.dragonfly import pipeline as dragonfly
    from surrogate.prose import pipeline as prose

    # the pipelines map these functions, not copies of their own
    assert dragonfly.simulate_task.__module__ == "surrogate.dragonfly.scenarios"
    assert prose.make_dataset_task.__module__ == "surrogate.prose.data"


# ------------------------------------------------------------------ failures
def flaky(task):
    """Fails the first time it sees a task whose marker file does not exist yet; 'always' always fails."""
    name, marker = task
    if name == "always":
        raise RuntimeError("this task cannot succeed")
    if not Path(marker).exists():
        Path(marker).touch()
        raise OSError("transient failure")
    return name.upper()


def run_flaky(tmp_path, names, executor, workers):
    results, log = {}, []
    tasks = [(n, str(tmp_path / f"{n}.{workers}.{executor if executor == 'local' else 'dask'}")) for n in names]
    map_tasks(flaky, tasks, names, lambda i, r: results.__setitem__(names[i], r), executor, workers,
              retries=2, log=log.append)
    return results, log


@pytest.mark.parametrize("workers", [1, 2])
def test_a_failed_task_is_retried_then_reported_by_name(tmp_path, workers):
    results, log = run_flaky(tmp_path, ["a", "b"], "local", workers)
    assert results == {"a": "A", "b": "B"}
    assert sum("retry 1 of 2" in line for line in log) == 2
    with pytest.raises(TaskFailed, match="solver task always failed 3 times.*cannot succeed"):
        run_flaky(tmp_path, ["c", "always"], "local", workers)


def test_dask_retries_and_reports_failed_tasks_too(tmp_path, cluster):
    executor = DaskExecutor(dask=cluster.scheduler_address)
    results, _ = run_flaky(tmp_path, ["a", "b"], executor, 2)
    assert results == {"a": "A", "b": "B"}
    with pytest.raises(TaskFailed, match="solver task always failed 3 times on Dask"):
        run_flaky(tmp_path, ["c", "always"], executor, 2)


def test_an_unreachable_scheduler_is_a_clear_error_and_writes_nothing(tmp_path, capsys):
    pytest.importorskip("distributed")
    with pytest.raises(CaseError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"):
        generate("pig_helmholtz.yaml", tmp_path / "x", "executor.dask=tcp://127.0.0.1:9", "executor.timeout=1")
    assert not list((tmp_path / "x").glob("*.nc"))
    results = tmp_path / "results"
    code = main(["--results", str(results), "run", str(CASES / "pig_helmholtz.yaml"), "-p", "smoke", "-q",
                 "executor.dask=tcp://127.0.0.1:9", "executor.timeout=1"])
    assert code == 2 and "cannot reach the Dask scheduler" in capsys.readouterr().err
    assert not list(results.rglob("*.nc"))


def test_bad_executor_settings_say_what_is_allowed():
    for override, message in [("executor=cluster", "allowed: local, {dask: local}"),
                              ("executor.dask=http://host", 'allowed: "local" or a scheduler address'),
                              ("executor.scheduler=local", "scheduler: unknown key"), ("workers=0", "workers")]:
        with pytest.raises(CaseError, match=message):
            load_case(CASES / "lorenz96_mno.yaml", "smoke", [override])
    assert np.isfinite(load_case(CASES / "lorenz96_mno.yaml", "smoke", ["workers=2"]).workers)


# ------------------------------------------------------------------ zarr
@pytest.mark.parametrize("case_file", ["lorenz96_mno.yaml", "mmgp.yaml"])
def test_zarr_stores_hold_the_same_data_as_netcdf_files(case_file, tmp_path):
    pytest.importorskip("zarr")
    netcdf = generate(case_file, tmp_path / "netcdf")
    zarr = generate(case_file, tmp_path / "zarr", "data.format=zarr")
    assert not list((tmp_path / "zarr").glob("*.nc")) and list((tmp_path / "zarr").glob("*.zarr"))
    assert same_data(netcdf, zarr)


def test_a_case_runs_end_to_end_on_zarr_data_with_the_same_metrics(helmholtz_smoke_run, tmp_path):
    pytest.importorskip("zarr")
    import surrogate

    run = Path(surrogate.run(CASES / "pig_helmholtz.yaml", profile="smoke", overrides=["data.format=zarr"],
                             results=tmp_path, quiet=True))
    assert (run / "data" / "reference.zarr").is_dir() and not (run / "data" / "reference.nc").exists()
    accuracy = lambda path: [r for r in read_json(path / "metrics.json")["rows"] if r["unit"] != "s"]  # noqa: E731
    assert accuracy(run) == accuracy(Path(helmholtz_smoke_run))

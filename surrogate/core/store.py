"""The run folder and everything written into it.

Every file is written to a temporary name beside its target and renamed into place, so an
interrupted run never leaves half a file. Weights are plain tensor state dicts loaded with
``weights_only=True``; everything else is JSON, YAML or CF-annotated NetCDF. Nothing is pickled.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import xarray as xr
import yaml

xr.set_options(keep_attrs=True)

CONVENTIONS = "CF-1.11"
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(target: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces the target."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix or ".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def write_yaml(path: str | Path, data: Any) -> None:
    write_text(path, yaml.safe_dump(data, sort_keys=False))


def _cf(ds: xr.Dataset) -> xr.Dataset:
    """The dataset with CF global attributes; every variable must carry units and long_name."""
    missing = [str(n) for n, v in ds.variables.items() if "units" not in v.attrs or "long_name" not in v.attrs]
    if missing:
        raise ValueError(f"variables without CF units/long_name: {', '.join(missing)}")
    ds = ds.copy()
    ds.attrs.setdefault("Conventions", CONVENTIONS)
    ds.attrs["history"] = (
        ds.attrs.get("history", "") + f"\n{_now()} written by surrogate {_version()}"
    ).strip()
    return ds


def write_netcdf(ds: xr.Dataset, path: str | Path) -> None:
    with atomic_path(path, suffix=".nc") as tmp:
        _cf(ds).to_netcdf(tmp, engine="netcdf4")


def read_netcdf(path: str | Path) -> xr.Dataset:
    with xr.open_dataset(path, engine="netcdf4") as ds:
        return ds.load()


# Solver data are named `<name>.nc` throughout; with `data.format: zarr` the same dataset is the Zarr
# store `<name>.zarr` beside it. These three functions are the only places that know.
DATA_FORMATS = ("netcdf", "zarr")


def write_data(ds: xr.Dataset, path: str | Path, fmt: str = "netcdf", chunks: dict[str, int] | None = None) -> None:
    """Write solver data as NetCDF (`path`) or as a Zarr store (`path` with suffix .zarr), atomically."""
    path = Path(path)
    if fmt == "netcdf":
        return write_netcdf(ds, path)
    if fmt != "zarr":
        raise ValueError(f"data format {fmt!r} is not known; allowed: {', '.join(DATA_FORMATS)}")
    target = path.with_suffix(".zarr")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        ds = _cf(ds)
        if chunks:
            ds = ds.chunk({k: v for k, v in chunks.items() if k in ds.dims})
        ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=2)  # v2: what most readers know
        os.replace(tmp, target)  # a directory: the rename is atomic when the target does not exist yet
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def data_path(path: str | Path) -> Path | None:
    """Where the dataset `<name>.nc` is: the NetCDF file, its Zarr store, or None."""
    path = Path(path)
    for candidate in (path, path.with_suffix(".zarr")):
        if candidate.exists():
            return candidate
    return None


def read_data(path: str | Path) -> xr.Dataset:
    found = data_path(path)
    if found is None:
        raise FileNotFoundError(f"no solver data {path} (nor {Path(path).with_suffix('.zarr').name})")
    if found.suffix == ".zarr":
        with xr.open_zarr(found, consolidated=True) as ds:
            return ds.load()
    return read_netcdf(found)


def save_weights(path: str | Path, state: dict[str, Any]) -> None:
    import torch

    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def tensor_state(module) -> dict[str, Any]:
    """A module's state dict with tensors only, on the CPU (some libraries add Python objects to it,
    which `weights_only=True` rightly refuses to load)."""
    import torch

    return {k: v.detach().cpu() for k, v in module.state_dict().items() if isinstance(v, torch.Tensor)}


def load_weights(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    import torch

    return torch.load(path, map_location=map_location, weights_only=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _version() -> str:
    from surrogate import __version__

    return __version__


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    import numpy
    import torch

    env = {
        "surrogate": _version(), "python": platform.python_version(), "numpy": numpy.__version__,
        "torch": torch.__version__, "xarray": xr.__version__, "machine": platform.machine(),
        "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
    }
    try:
        import neuralop

        env["neuraloperator"] = neuralop.__version__
    except ImportError:
        pass
    return env


class RunFolder:
    """One run: ``results/<case>/<run-id>/`` with case.yaml, meta.json, data/, model/, ..."""

    STATUSES = ("running", "finished", "failed", "interrupted")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # layout
    @property
    def case_file(self) -> Path:
        return self.path / "case.yaml"

    @property
    def meta_file(self) -> Path:
        return self.path / "meta.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.json"

    @property
    def predictions_file(self) -> Path:
        return self.path / "predictions.nc"

    def sub(self, name: str) -> Path:
        p = self.path / name
        p.mkdir(parents=True, exist_ok=True)
        return p

    # metadata
    def meta(self) -> dict[str, Any]:
        return read_json(self.meta_file) if self.meta_file.exists() else {}

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        meta = self.meta()
        meta.update(changes)
        write_json(self.meta_file, meta)
        return meta

    def mark_stage(self, stage: str) -> None:
        done = self.meta().get("stages_done", [])
        if stage not in done:
            self.update_meta(stages_done=[*done, stage])

    def stage_done(self, stage: str) -> bool:
        return stage in self.meta().get("stages_done", [])

    @property
    def status(self) -> str:
        status = self.meta().get("status", "unknown")
        if status == "running" and not self.is_locked():
            return "interrupted"  # killed without a chance to say so
        return status

    def metrics(self) -> dict[str, Any] | None:
        return read_json(self.metrics_file) if self.metrics_file.exists() else None

    # a lock file holding the PID, so a live run is never resumed by a second process
    @property
    def lock_file(self) -> Path:
        return self.path / ".lock"

    def is_locked(self) -> bool:
        try:
            pid = int(self.lock_file.read_text().strip())
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not _zombie(pid)

    def lock(self) -> None:
        write_text(self.lock_file, str(os.getpid()))

    def unlock(self) -> None:
        self.lock_file.unlink(missing_ok=True)


def _zombie(pid: int) -> bool:
    """A killed process that nobody has reaped yet (its parent died too, and the container's first
    process does not reap orphans): it still answers kill(pid, 0) but holds nothing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # no /proc (macOS) or already gone
        return False
    return stat.rpartition(")")[2].split()[0] == "Z"


def list_runs(results: str | Path) -> list[RunFolder]:
    """Every run folder under results/<case>/, newest first."""
    results = Path(results)
    runs = []
    if results.is_dir():
        for case_dir in sorted(p for p in results.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for run in case_dir.iterdir():
                if run.is_dir() and not run.is_symlink() and (run / "meta.json").exists():
                    runs.append(RunFolder(run))
    runs.sort(key=lambda r: r.path.name, reverse=True)
    return runs


def point_latest(run: RunFolder) -> None:
    """results/<case>/latest -> the given run (a relative symlink, replaced atomically)."""
    link = run.path.parent / "latest"
    tmp = run.path.parent / f".latest.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(run.path.name)
    os.replace(tmp, link)


def resolve_run(spec: str | Path, results: str | Path = "results") -> RunFolder:
    """A run given as a path, as ``<case>`` (its latest) or as ``<case>/<run-id>``."""
    for candidate in (Path(spec), Path(results) / spec, Path(results) / spec / "latest"):
        if (candidate / "meta.json").exists():
            return RunFolder(candidate.resolve())
    raise FileNotFoundError(
        f"no run at {spec!r}; give a run folder, a case name with a finished run, or see `surrogate list`"
    )

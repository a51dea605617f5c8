"""What the explorer app computes, as plain functions: run listings, metric tables, learning curves,
comparisons, background runs and the Lorenz96 live rollout.

The Streamlit pages only lay these out, so everything here is testable without Streamlit (and
nothing here imports it). Functions that read a run never raise on a broken run folder: they
return what they could read and say what they could not, because one bad folder must not take a
page down.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from surrogate.core.store import RunFolder, list_runs

FAMILIES = {"lorenz96": "Lorenz96", "pinn": "PINN", "mmgp": "MMGP", "prose": "PROSE", "dragonfly": "Dragonfly"}
FIRST_RUN = "surrogate run cases/lorenz96_mno.yaml --profile smoke"
JOBS_DIR = ".jobs"  # under results/; dot folders are not case folders, so list_runs skips it


# ------------------------------------------------------------------ results folder
def results_problem(results: str | Path) -> str | None:
    """A sentence saying why `results` cannot be browsed, or None when it can."""
    p = Path(results)
    if not str(results).strip():
        return "No results folder given."
    if not p.exists():
        return f"The results folder {p} does not exist. Make a first run with `{FIRST_RUN}` or pick another folder."
    if not p.is_dir():
        return f"{p} is a file, not a results folder."
    return None


def default_results(argv: list[str] | None = None, environ: dict[str, str] | None = None) -> str:
    """`--results R` after `streamlit run explorer.py --`, else $SURROGATE_RESULTS, else ./results."""
    argv = sys.argv[1:] if argv is None else argv
    environ = os.environ if environ is None else environ
    for i, a in enumerate(argv):
        if a == "--results" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--results="):
            return a.split("=", 1)[1]
    return environ.get("SURROGATE_RESULTS") or "results"


def results_stamp(results: str | Path) -> float:
    """Changes whenever a run folder is added, removed or rewritten: the cache key for listings."""
    p = Path(results)
    if not p.is_dir():
        return 0.0
    stamp = p.stat().st_mtime
    for case_dir in p.iterdir():
        if case_dir.is_dir() and not case_dir.name.startswith("."):
            stamp = max(stamp, case_dir.stat().st_mtime)
            for run in case_dir.iterdir():
                meta = run / "meta.json"
                try:
                    stamp = max(stamp, run.stat().st_mtime, meta.stat().st_mtime)
                except OSError:
                    continue
    return stamp


def run_stamp(run_path: str | Path) -> float:
    """Newest mtime among the files the pages read from one run folder."""
    p = Path(run_path)
    stamp = 0.0
    for f in (p, p / "meta.json", p / "metrics.json", p / "model" / "training.json", p / "model" / "index.json"):
        try:
            stamp = max(stamp, f.stat().st_mtime)
        except OSError:
            pass
    return stamp


# ------------------------------------------------------------------ runs
@dataclass
class RunInfo:
    path: str
    case: str
    run_id: str
    family: str
    status: str
    profile: str
    started: str
    headline: str = ""
    headline_value: float | None = None
    error: str = ""

    @property
    def label(self) -> str:
        return f"{self.case}/{self.run_id}"


def _read_json(path: Path) -> tuple[Any, str]:
    """(content, "") or (None, why not); a missing file is (None, "")."""
    if not path.exists():
        return None, ""
    try:
        return json.loads(path.read_text()), ""
    except (OSError, ValueError) as err:
        return None, f"{path.name} is unreadable ({type(err).__name__}: {err})"


def run_info(run_path: str | Path) -> RunInfo:
    """One run's summary; a corrupted or half-written folder gives status 'corrupted' and the reason."""
    run = RunFolder(Path(run_path))
    meta, meta_err = _read_json(run.meta_file)
    metrics, metrics_err = _read_json(run.metrics_file)
    meta = meta if isinstance(meta, dict) else {}
    metrics = metrics if isinstance(metrics, dict) else {}
    if meta_err or not meta:
        status = "corrupted"
    else:
        try:
            status = run.status
        except (OSError, ValueError):
            status = "corrupted"
    family = str(meta.get("family") or metrics.get("family") or _family_from_case(run.path) or "unknown")
    head = metrics.get("headline") or {}
    headline, value = "", None
    if isinstance(head, dict) and {"method", "metric", "value"} <= set(head):
        try:
            value = float(head["value"])
            headline = f"{head['method']} {head['metric']}"
        except (TypeError, ValueError):
            pass
    errors = [e for e in (meta_err or ("meta.json is empty" if not meta else ""), metrics_err,
                          str(meta.get("error") or "")) if e]
    return RunInfo(
        path=str(run.path), case=str(meta.get("case") or run.path.parent.name), run_id=run.path.name,
        family=family, status=status, profile=str(meta.get("profile") or "default"),
        started=str(meta.get("started") or "").replace("T", " "), headline=headline, headline_value=value,
        error="; ".join(errors),
    )


def _family_from_case(run_path: Path) -> str | None:
    try:
        case = yaml.safe_load((run_path / "case.yaml").read_text())
        return case.get("pipeline") if isinstance(case, dict) else None
    except (OSError, yaml.YAMLError):
        return None


def list_run_infos(results: str | Path) -> list[RunInfo]:
    """Every run under `results`, newest first; [] for a missing folder."""
    if results_problem(results):
        return []
    return [run_info(r.path) for r in list_runs(results)]


RUN_COLUMNS = ["case", "run", "family", "status", "profile", "started", "headline", "value", "problem"]


def runs_frame(infos: list[RunInfo], family: str | None = None, case: str | None = None) -> pd.DataFrame:
    """The Runs table, optionally filtered by family and case (None or "" = all)."""
    rows = [{"case": i.case, "run": i.run_id, "family": i.family, "status": i.status, "profile": i.profile,
             "started": i.started, "headline": i.headline, "value": i.headline_value, "problem": i.error}
            for i in infos if (not family or i.family == family) and (not case or i.case == case)]
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def status_counts(infos: list[RunInfo]) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in infos:
        out[i.status] = out.get(i.status, 0) + 1
    return out


def family_runs(infos: list[RunInfo], family: str) -> list[RunInfo]:
    return [i for i in infos if i.family == family]


# ------------------------------------------------------------------ one run
def case_text(run_path: str | Path) -> str:
    p = Path(run_path) / "case.yaml"
    try:
        return p.read_text()
    except OSError:
        return ""


def read_metrics(run_path: str | Path) -> tuple[dict[str, Any] | None, str]:
    """(metrics.json, "") or (None, a sentence saying why there are none)."""
    p = Path(run_path)
    metrics, err = _read_json(p / "metrics.json")
    if err:
        return None, err
    if metrics is None:
        status = run_info(p).status
        return None, f"No metrics yet (status: {status})."
    if not isinstance(metrics, dict) or not isinstance(metrics.get("rows"), list):
        return None, "metrics.json has no rows."
    return metrics, ""


def _rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in metrics.get("rows", []) if isinstance(r, dict) and {"method", "metric", "value"} <= set(r)]


def metrics_long(metrics: dict[str, Any]) -> pd.DataFrame:
    """One row per (method, metric): value, 95% interval and unit."""
    rows = [{"method": r["method"], "metric": r["metric"], "value": _num(r["value"]),
             "ci_low": _num(r.get("ci_low")), "ci_high": _num(r.get("ci_high")), "unit": r.get("unit", "1")}
            for r in _rows(metrics)]
    return pd.DataFrame(rows, columns=["method", "metric", "value", "ci_low", "ci_high", "unit"])


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def metrics_wide(metrics: dict[str, Any], metric_names: list[str] | None = None) -> pd.DataFrame:
    """Methods down, metrics across (the `surrogate show` table as a DataFrame); the surrogate first."""
    long = metrics_long(metrics)
    if long.empty:
        return pd.DataFrame()
    names = [n for n in (metric_names or list(dict.fromkeys(long["metric"]))) if n in set(long["metric"])]
    wide = long.pivot_table(index="method", columns="metric", values="value", aggfunc="first", sort=False)
    wide = wide.reindex(columns=names).dropna(how="all")
    return wide


def main_and_other_metrics(metrics: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table of `table_metrics`, the long list of every other row)."""
    main = metrics.get("table_metrics") or None
    long = metrics_long(metrics)
    rest = long[~long["metric"].isin(main)] if main else long.iloc[0:0]
    return metrics_wide(metrics, main), rest.reset_index(drop=True)


def learning_curves(run_path: str | Path) -> tuple[pd.DataFrame, str]:
    """Loss per epoch from model/training.json as a long table (series, epoch, loss).

    Every list of numbers under a method becomes one series `<method> <stage>`; stages follow one
    another on the epoch axis, as in the run's own figure.
    """
    data, err = _read_json(Path(run_path) / "model" / "training.json")
    if err:
        return pd.DataFrame(columns=["series", "epoch", "loss"]), err
    rows = []
    if isinstance(data, dict):
        for method, stages in data.items():
            if isinstance(stages, list):
                stages = {"loss": stages}
            if not isinstance(stages, dict):
                continue
            offset = 0
            for stage, values in stages.items():
                if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
                    continue
                rows += [{"series": f"{method} {stage}", "epoch": offset + i + 1, "loss": float(v)}
                         for i, v in enumerate(values)]
                offset += len(values)
    return pd.DataFrame(rows, columns=["series", "epoch", "loss"]), ""


def figures(run_path: str | Path) -> list[Path]:
    return sorted((Path(run_path) / "figures").glob("*.png"))


def log_tail(run_path: str | Path, n: int = 30) -> str:
    return tail(Path(run_path) / "log.txt", n)


def tail(path: Path, n: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 64_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    # a progress bar rewrites its line with carriage returns: keep the last state of each line
    lines = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(lines[-n:])


# ------------------------------------------------------------------ compare
def compare_metrics(run_paths: list[str | Path], all_methods: bool = False,
                    main_only: bool = False) -> pd.DataFrame:
    """Metrics of several runs side by side: rows (method, metric), one column per run.

    By default only each run's own surrogate (the method of its headline) is shown, so runs with
    different baselines still line up. `main_only` keeps the runs' `table_metrics`.
    """
    columns, order = {}, {}
    for p in run_paths:
        info = run_info(p)
        metrics, _ = read_metrics(p)
        if metrics is None:
            continue
        long = metrics_long(metrics)
        if not all_methods:
            ours = metrics.get("surrogate") or (metrics.get("headline") or {}).get("method")
            long = long[long["method"] == ours].assign(method="surrogate")
        if main_only and metrics.get("table_metrics"):
            long = long[long["metric"].isin(metrics["table_metrics"])]
        series = long.drop_duplicates(["method", "metric"]).set_index(["method", "metric"])["value"]
        columns[info.label] = series
        order.update(dict.fromkeys(series.index))
    if not columns:
        return pd.DataFrame()
    # keep the order the runs list their metrics in (the main table first), not alphabetical
    return pd.DataFrame(columns).reindex(pd.MultiIndex.from_tuples(list(order), names=["method", "metric"]))


def compare_curves(run_paths: list[str | Path]) -> pd.DataFrame:
    """Learning curves of several runs in one long table (run, series, epoch, loss)."""
    frames = []
    for p in run_paths:
        curves, _ = learning_curves(p)
        if not curves.empty:
            frames.append(curves.assign(run=run_info(p).label))
    if not frames:
        return pd.DataFrame(columns=["run", "series", "epoch", "loss"])
    return pd.concat(frames, ignore_index=True)[["run", "series", "epoch", "loss"]]


# ------------------------------------------------------------------ background runs
@dataclass
class Job:
    """A `surrogate run` started from the app: a subprocess and the console file it writes."""

    id: str
    pid: int
    case: str
    profile: str | None
    results: str
    console: str
    command: list[str]
    started: float
    returncode: int | None = None

    @property
    def file(self) -> Path:
        return Path(self.results) / JOBS_DIR / f"{self.id}.json"

    def save(self) -> None:
        self.file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, self.file)


def list_cases(cases_dir: str | Path = "cases") -> list[Path]:
    p = Path(cases_dir)
    return sorted(p.glob("*.yaml")) if p.is_dir() else []


def case_profiles(case_path: str | Path) -> list[str]:
    """The profile names a case file defines ('default' first); [] if it is not a readable case."""
    try:
        data = yaml.safe_load(Path(case_path).read_text())
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    return ["default", *list((data.get("profiles") or {}).keys())]


_OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=.*$")


def parse_overrides(text: str) -> tuple[list[str], str]:
    """`key=value` overrides, one per line or separated by spaces; ([], message) on a malformed one."""
    items = [t for t in re.split(r"\s+", text.strip()) if t]
    bad = [t for t in items if not _OVERRIDE.match(t)]
    if bad:
        return [], f"Overrides must look like key=value (e.g. train.epochs=2); not understood: {' '.join(bad)}"
    return items, ""


def start_run(case_path: str | Path, results: str | Path, profile: str | None = None,
              overrides: list[str] | tuple[str, ...] = (), python: str | None = None) -> Job:
    """Start `python -m surrogate --results R run CASE ...` in its own process group and return at once.

    The app never trains in its own process: training would block every session and die with
    the server. Console output goes to results/.jobs/<id>.log, which `job_progress` reads.
    """
    case_path, results = Path(case_path).resolve(), Path(results).resolve()
    if not case_path.is_file():
        raise FileNotFoundError(f"no case file {case_path}")
    results.mkdir(parents=True, exist_ok=True)
    job_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    console = results / JOBS_DIR / f"{job_id}.log"
    console.parent.mkdir(parents=True, exist_ok=True)
    cmd = [python or sys.executable, "-m", "surrogate", "--results", str(results), "run", str(case_path)]
    if profile and profile != "default":
        cmd += ["--profile", profile]
    cmd += list(overrides)
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")  # the app's host is shared; one thread per training process
    env["PYTHONUNBUFFERED"] = "1"
    with open(console, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(case_path.parent.parent), env=env, start_new_session=True)
    job = Job(id=job_id, pid=proc.pid, case=case_path.stem, profile=profile, results=str(results),
              console=str(console), command=cmd, started=time.time())
    job.save()
    return job


def load_job(path: str | Path) -> Job | None:
    data, err = _read_json(Path(path))
    if err or not isinstance(data, dict):
        return None
    try:
        return Job(**data)
    except TypeError:
        return None


def list_jobs(results: str | Path) -> list[Job]:
    """Jobs started from the app, newest first."""
    folder = Path(results) / JOBS_DIR
    jobs = [load_job(p) for p in sorted(folder.glob("*.json"), reverse=True)] if folder.is_dir() else []
    return [j for j in jobs if j is not None]


def _alive(job: Job) -> bool:
    """Is the job's process still running? Reaps it (and records its exit code) when it is our child."""
    if job.returncode is not None:
        return False
    try:
        pid, status = os.waitpid(job.pid, os.WNOHANG)
    except ChildProcessError:  # not our child (another server process started it): ask the kernel
        try:
            os.kill(job.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _cmdline_matches(job)
    if pid == 0:
        return True
    job.returncode = os.waitstatus_to_exitcode(status)
    job.save()
    return False


def _cmdline_matches(job: Job) -> bool:
    """Guard against a recycled PID: the live process must still be a `surrogate run`."""
    try:
        cmdline = Path(f"/proc/{job.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return True  # no /proc: trust the PID
    return "surrogate" in cmdline and "run" in cmdline


_RUN_LINE = re.compile(r"(?:starting|resuming) run (\S+)")


def job_progress(job: Job) -> dict[str, Any]:
    """What the page shows while a job runs: alive or not, its run folder, stages done, last lines."""
    alive = _alive(job)
    console = tail(Path(job.console), 200)
    match = _RUN_LINE.search(console)
    run_dir = match.group(1) if match else None
    info = run_info(run_dir) if run_dir and Path(run_dir, "meta.json").exists() else None
    stages: list[str] = []
    if run_dir:
        meta, _ = _read_json(Path(run_dir) / "meta.json")
        stages = list((meta or {}).get("stages_done", [])) if isinstance(meta, dict) else []
    if alive:
        state = "running"
    elif info is not None and info.status in ("finished", "failed", "interrupted"):
        state = info.status
    elif job.returncode == 0:
        state = "finished"
    else:
        state = "failed"
    lines = [ln for ln in console.splitlines() if ln.strip()]
    return {"state": state, "alive": alive, "run_dir": run_dir, "stages_done": stages,
            "fraction": len(stages) / 3, "returncode": job.returncode, "console": "\n".join(lines[-25:]),
            "elapsed_s": round(time.time() - job.started, 1), "error": info.error if info else ""}


def stop_job(job: Job) -> None:
    """Interrupt a job like Ctrl-C would, so the run is marked interrupted and can be resumed."""
    if _alive(job):
        os.killpg(os.getpgid(job.pid), signal.SIGINT)


# ------------------------------------------------------------------ Lorenz96 exploration
LORENZ96_MAX_MTU = 5.0  # a live rollout of the truth solver must stay interactive


def saved_methods(run_path: str | Path) -> tuple[str | None, list[str]]:
    """(the surrogate's name, every method of the run) from model/index.json."""
    index, _ = _read_json(Path(run_path) / "model" / "index.json")
    if not isinstance(index, dict):
        return None, []
    methods = [m for m in index.get("methods", []) if (Path(run_path) / "model" / f"{m}.json").exists()]
    return index.get("surrogate"), methods


def lorenz96_settings(run_path: str | Path) -> dict[str, Any]:
    """The solver and data settings of the run's resolved case."""
    case = yaml.safe_load(case_text(run_path) or "{}") or {}
    solver, data = case.get("solver") or {}, case.get("data") or {}
    dt = float(solver.get("dt", 0.001))
    every = int(data.get("sample_every", 5))
    return {"solver": solver, "dt": dt, "sample_every": every, "coarse_dt": dt * every,
            "spinup_mtu": float(data.get("spinup_mtu", 1.0)), "seed": int(case.get("seed", 0))}


def lorenz96_held_out(run_path: str | Path) -> tuple[np.ndarray | None, str]:
    """The held-out truth trajectories X (trajectory, time, K) of data/test.nc."""
    from surrogate.core.store import data_path, read_data

    p = Path(run_path) / "data" / "test.nc"
    if data_path(p) is None:
        return None, "This run has no data/test.nc (its solver stage did not finish)."
    try:
        return np.asarray(read_data(p)["X"].values), ""
    except Exception as err:  # a truncated or foreign file: say so, the page keeps working
        return None, f"data/test.nc is unreadable ({type(err).__name__}: {err})"


def check_in_range(value: float, low: float, high: float, name: str) -> str:
    """'' when low <= value <= high, else a sentence for the page."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return f"{name} must be a number, got {value!r}."
    if not math.isfinite(v) or v < low or v > high:
        return f"{name} must be between {low:g} and {high:g}, got {value!r}."
    return ""


def lorenz96_truth(run_path: str | Path, source: str, seed: int = 0, index: int = 0, mtu: float = 1.0,
                   with_history: bool = False):
    """(time, X) of the truth from the chosen initial state, sampled at the coarse step; with
    `with_history`, also the slow states observed just before it (history, oldest first; None
    where the run's data do not have them), which a closure with memory starts from.

    source "held-out": trajectory `index` of data/test.nc (already solved by the run, so free);
    source "random": a random state spun up on the attractor and integrated now by the two-scale
    solver with the run's settings.
    """
    from surrogate.lorenz96.data import HISTORY

    s = lorenz96_settings(run_path)
    n = max(1, int(round(mtu / s["coarse_dt"])))
    if source == "held-out":
        X, err = lorenz96_held_out(run_path)
        if X is None:
            raise ValueError(err)
        if not 0 <= index < len(X):
            raise ValueError(f"held-out state must be between 0 and {len(X) - 1}, got {index}")
        traj = X[index, : n + 1]
        history = None
        if with_history:
            from surrogate.core.store import read_data

            test = read_data(Path(run_path) / "data" / "test.nc")
            history = np.asarray(test["X_history"].values[index]) if "X_history" in test else None
        time_ = np.arange(len(traj)) * s["coarse_dt"]
        return (time_, traj, history) if with_history else (time_, traj)
    from surrogate.lorenz96.physics import TwoScaleLorenz96, random_initial_state

    sv = s["solver"]
    model = TwoScaleLorenz96(int(sv["K"]), int(sv["J"]), float(sv["F"]), float(sv["h"]), float(sv["b"]),
                             float(sv["c"]), sv.get("y_periodicity", "ring"))
    X0, Y0 = random_initial_state(model.K, model.J, 1, np.random.default_rng([s["seed"], 1000, seed]))
    spin = int(round(min(s["spinup_mtu"], 1.0) / s["dt"]))  # a short spin-up is enough to reach the attractor
    X0, Y0 = model.spin_up(X0, Y0, s["dt"], spin)
    xs, _, _ = model.run(X0, Y0, s["dt"], HISTORY + n + 1, s["sample_every"])  # the history, then the shown part
    time_ = np.arange(n + 1) * s["coarse_dt"]
    return (time_, xs[0, HISTORY:], xs[0, :HISTORY]) if with_history else (time_, xs[0, HISTORY:])


def lorenz96_rollouts(models: dict[str, Any], X0: np.ndarray, n_steps: int,
                      history: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Each model's free run (n_steps + 1, K) from X0 (K,); a run that blows up is kept (NaN shows it).
    A closure with memory starts from `history` (the states before X0) and is left out without it."""
    out = {}
    with np.errstate(all="ignore"):
        for name, m in models.items():
            if getattr(m, "memory", 0):
                if history is not None:
                    out[name] = m.rollout(np.asarray(X0)[None, :], n_steps, history=np.asarray(history)[None])[0]
            else:
                out[name] = m.rollout(np.asarray(X0)[None, :], n_steps)[0]
    return out


def lorenz96_frames(time_: np.ndarray, truth: np.ndarray, preds: dict[str, np.ndarray],
                    site: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(X_site over time for truth and each method, RMSE over the ring vs time per method)."""
    x = {"truth": truth[:, site]}
    err = {}
    for name, p in preds.items():
        n = min(len(p), len(truth))
        x[name] = np.concatenate([p[:n, site], np.full(len(truth) - n, np.nan)])
        e = np.sqrt(np.mean((p[:n] - truth[:n]) ** 2, axis=-1))
        err[name] = np.concatenate([e, np.full(len(truth) - n, np.nan)])
    idx = pd.Index(np.round(time_, 6), name="time (MTU)")
    return pd.DataFrame(x, index=idx), pd.DataFrame(err, index=idx)


# ------------------------------------------------------------------ other families
def family_import_problem(family: str) -> str:
    """'' when the family's pipeline imports, else a sentence naming what is missing."""
    import importlib

    from surrogate.core.registry import _PIPELINES

    module = _PIPELINES.get(family, "").partition(":")[0]
    if not module:
        return f"The {FAMILIES.get(family, family)} family is not part of this installation yet."
    try:
        importlib.import_module(module)
    except Exception as err:  # an optional dependency missing or a family mid-change: report, don't crash
        name = FAMILIES.get(family, family)
        return (f"The {name} family could not be imported ({type(err).__name__}: {err}); "
                f"try `pip install 'surrogate[{family}]'`.")
    return ""


def predictions_summary(run_path: str | Path) -> tuple[pd.DataFrame, str]:
    """Variables of predictions.nc with dims, units and long_name."""
    p = Path(run_path) / "predictions.nc"
    if not p.exists():
        return pd.DataFrame(), "This run has no predictions.nc yet."
    try:
        import xarray as xr

        with xr.open_dataset(p, engine="netcdf4") as ds:
            rows = [{"variable": n, "dims": ", ".join(map(str, v.dims)), "shape": "x".join(map(str, v.shape)),
                     "units": v.attrs.get("units", ""), "long_name": v.attrs.get("long_name", "")}
                    for n, v in ds.data_vars.items()]
    except Exception as err:
        return pd.DataFrame(), f"predictions.nc is unreadable ({type(err).__name__}: {err})"
    return pd.DataFrame(rows), ""


MESH_SUFFIXES = (".vtu", ".vtk", ".msh", ".xdmf", ".obj", ".stl", ".ply", ".off", ".mesh", ".med")


def check_mesh_upload(name: str, data: bytes) -> tuple[dict[str, Any] | None, str]:
    """Read an uploaded mesh with meshio: ({points, cells, cell_types}, "") or (None, a message)."""
    suffix = Path(name).suffix.lower()
    if suffix not in MESH_SUFFIXES:
        return None, f"{name} is not a mesh file; expected one of {', '.join(MESH_SUFFIXES)}."
    try:
        import meshio
    except ImportError:
        return None, "Reading meshes needs meshio: pip install 'surrogate[mmgp]'."
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            mesh = meshio.read(path)
        except (Exception, SystemExit) as err:  # meshio raises many kinds on garbage, even SystemExit
            why = f"{type(err).__name__}: {err}" if not isinstance(err, SystemExit) else "unrecognised content"
            return None, f"{name} could not be read as a mesh ({why})."
    if len(mesh.points) == 0:
        return None, f"{name} has no points."
    return {"points": int(len(mesh.points)), "cells": int(sum(len(c.data) for c in mesh.cells)),
            "cell_types": sorted({c.type for c in mesh.cells})}, ""

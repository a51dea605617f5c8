"""Solver data for a lorenz96 case: truth trajectories as CF-annotated xarray datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr

from surrogate.core.executor import map_tasks
from surrogate.core.store import data_path, write_data
from surrogate.lorenz96.physics import TwoScaleLorenz96, l96_tendency, random_initial_state

CHUNK = 250  # trajectories integrated together; bounds memory at large K*J
MAX_REDRAWS = 20  # new random starts for trajectories that blew up before a chunk is given up
HISTORY = 16  # coarse steps kept before each trajectory's first sample: what a closure with memory starts from

# independent random streams, so adding a data set never changes another
STREAMS = {"train": 1, "test": 2, "climate_a": 3, "climate_b": 4, "transfer_train": 5, "transfer_test": 6}


def truth_model(case, K: int | None = None) -> TwoScaleLorenz96:
    s = case.solver
    return TwoScaleLorenz96(K or s.K, s.J, s.F, s.h, s.b, s.c, s.y_periodicity)


def closure_target(case, X: np.ndarray, U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X, target) aligned in time. 'residual' drops the last sample, which has no successor."""
    if case.coarse.target == "coupling":
        return X, U
    dt = case.coarse_dt
    f = (X[:, 1:] - X[:, :-1]) / dt - l96_tendency(X[:, :-1], case.solver.F)
    return X[:, :-1], f


def _chunk_rng(case, stream: str, index: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng([case.seed, STREAMS[stream], index, chunk])


def simulate_chunk(task: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One solver task: `m` truth trajectories from their own random stream: X, the coupling U and
    the HISTORY slow states (one coarse step apart) that end the warm-up, just before X's first sample.

    RK4 at the solver's step can blow up from an unlucky random start (the paper case at seed 1: 2 of
    4000 starts, within the warm-up); such a start is drawn again from the same stream, up to
    MAX_REDRAWS times, so that a chunk without blow-ups keeps exactly the trajectories it always had."""
    case = task["case"]
    model = truth_model(case, task["K"])
    rng = _chunk_rng(case, task["stream"], task["index"], task["chunk"])
    every = case.data.sample_every
    spin = int(round(case.data.spinup_mtu / case.solver.dt)) - HISTORY * every
    if spin < 0:
        raise ValueError(f"data.spinup_mtu={case.data.spinup_mtu} is shorter than the {HISTORY} coarse steps "
                         "kept before each trajectory")

    def simulate(n: int):
        X, Y = random_initial_state(model.K, model.J, n, rng)
        with np.errstate(over="ignore", invalid="ignore"):  # a blow-up is found below and drawn again
            X, Y = model.spin_up(X, Y, case.solver.dt, spin)
            before, _, (X, Y) = model.run(X, Y, case.solver.dt, HISTORY + 1, every)  # the warm-up's last steps
            x, u, _ = model.run(X, Y, case.solver.dt, task["n_samples"], every * task["record_every"])
        return x, u, before[:, :-1]

    x, u, before = simulate(task["m"])
    for _ in range(MAX_REDRAWS + 1):
        bad = ~(np.isfinite(x).all((1, 2)) & np.isfinite(u).all((1, 2)) & np.isfinite(before).all((1, 2)))
        if not bad.any():
            return x, u, before
        x[bad], u[bad], before[bad] = simulate(int(bad.sum()))
    raise ValueError(f"the truth solver blew up from {int(bad.sum())} random start(s) even after {MAX_REDRAWS} "
                     f"new draws: solver.dt={case.solver.dt} is too large for these parameters")


def chunk_tasks(case, n: int, mtu: float, stream: str, K: int | None = None, record_every: int = 1,
                index: int = 0) -> list[dict]:
    """The solver tasks of n trajectories: chunks of at most CHUNK, each with its own random stream."""
    n_samples = case.steps(mtu) // record_every + 1
    return [dict(case=case, K=K, stream=stream, index=index, chunk=c, m=min(CHUNK, n - start),
                 n_samples=n_samples, record_every=record_every)
            for c, start in enumerate(range(0, n, CHUNK))]


def to_dataset(case, X: np.ndarray, target: np.ndarray | None, dt_record: float, title: str,
               before: np.ndarray | None = None) -> xr.Dataset:
    coords = {
        "trajectory": ("trajectory", np.arange(X.shape[0]), {"long_name": "trajectory index", "units": "1"}),
        "time": ("time", np.arange(X.shape[1]) * dt_record,
                 {"long_name": "time in model time units", "units": "1", "axis": "T"}),
        "k": ("k", np.arange(X.shape[2]), {"long_name": "site on the slow ring", "units": "1", "axis": "X"}),
    }
    data = {"X": (("trajectory", "time", "k"), X, {"long_name": "slow variable X_k", "units": "1"})}
    if before is not None:
        coords["lag"] = ("lag", -np.arange(before.shape[1], 0, -1) * case.coarse_dt,
                         {"long_name": "time before the first sample in model time units", "units": "1"})
        data["X_history"] = (("trajectory", "lag", "k"), before,
                             {"long_name": "slow variable X_k at the coarse steps before the first sample",
                              "units": "1"})
    if target is not None:
        what = ("coupling -(hc/b) sum_j Y_jk" if case.coarse.target == "coupling"
                else "forward-Euler residual (X_{t+1}-X_t)/dt - N(X_t)")
        data["target"] = (("trajectory", "time", "k"), target,
                          {"long_name": f"closure target: {what}", "units": "1"})
    s = case.solver
    return xr.Dataset(data, coords, attrs={
        "title": title, "source": f"two-scale Lorenz96 (K={X.shape[2]}, J={s.J}, F={s.F}, h={s.h}, b={s.b}, "
        f"c={s.c}, Y {s.y_periodicity}), RK4 dt={s.dt}", "surrogate_family": "lorenz96",
    })


def generate(case, out: Path, log=print) -> None:
    """Write every data set the case needs into `out`; files already there are kept (resumable).

    Every chunk of trajectories is one solver task on the case's executor; a data set is written
    as soon as all its chunks are in.
    """
    d = case.data
    per_forecast = case.steps(d.forecast_mtu)
    test_mtu = per_forecast * d.forecasts_per_trajectory * case.coarse_dt
    record = max(1, case.steps(d.climate_record_mtu))
    jobs = [
        ("train", dict(n=d.n_train, mtu=d.train_mtu, stream="train"), True),
        ("test", dict(n=d.n_test, mtu=test_mtu, stream="test"), True),
        ("climate_a", dict(n=d.climate_runs, mtu=d.climate_mtu, stream="climate_a", record_every=record), False),
        ("climate_b", dict(n=d.climate_runs, mtu=d.climate_mtu, stream="climate_b", record_every=record), False),
    ]
    for K in d.transfer_K:
        jobs.append((f"transfer_train_K{K}", dict(n=d.transfer_n_train, mtu=d.transfer_mtu, stream="transfer_train",
                                                 K=K, index=K), True))
        jobs.append((f"transfer_test_K{K}", dict(n=d.transfer_n_test, mtu=d.transfer_mtu, stream="transfer_test",
                                                K=K, index=K), True))
    # the residual target needs each sample's successor: one more step, dropped again below
    extra = case.coarse_dt if case.coarse.target == "residual" else 0.0
    tasks, names, parts = [], [], {}
    for name, kwargs, with_target in jobs:
        if data_path(out / f"{name}.nc"):
            continue
        if with_target:
            kwargs = {**kwargs, "mtu": kwargs["mtu"] + extra}
        chunks = chunk_tasks(case, **kwargs)
        parts[name] = [None] * len(chunks)
        for t in chunks:
            tasks.append({**t, "job": name, "with_target": with_target})
            names.append(f"{name}[{t['chunk']}]")

    def write_when_complete(i: int, result) -> None:
        task = tasks[i]
        name = task["job"]
        parts[name][task["chunk"]] = result
        if any(p is None for p in parts[name]):
            return
        X = np.concatenate([p[0] for p in parts[name]])
        U = np.concatenate([p[1] for p in parts[name]])
        before = np.concatenate([p[2] for p in parts[name]])
        target = None
        if task["with_target"]:
            X, target = closure_target(case, X, U)
        dt_record = case.coarse_dt * task["record_every"]
        write_data(to_dataset(case, X, target, dt_record, f"Lorenz96 truth: {name}", before), out / f"{name}.nc",
                   case.data.format, chunks={"trajectory": CHUNK})
        parts[name] = []

    map_tasks(simulate_chunk, tasks, names, write_when_complete, case.executor, case.workers, log=log)

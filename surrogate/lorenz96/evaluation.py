"""How a Lorenz96 method is judged: closure error, forecasts, climate, domain-size transfer, cost."""
from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from surrogate.core import metrics as M
from surrogate.core.report import metric_row as row
from surrogate.core.training import progress
from surrogate.lorenz96.hybrid import HybridModel
from surrogate.lorenz96.physics import TwoScaleLorenz96


def histories(X: np.ndarray, before: np.ndarray, n: int) -> np.ndarray:
    """The n true states before every sample of trajectories X (traj, time, K), oldest first:
    (traj, time, n, K). `before` holds the states that precede each trajectory's first sample."""
    full = np.concatenate([before[:, before.shape[1] - n :], X], axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(full, n, axis=1)  # (traj, time + 1, K, n)
    return np.swapaxes(windows[:, : X.shape[1]], -1, -2)


def closure_scores(model: HybridModel, X: np.ndarray, target: np.ndarray,
                   before: np.ndarray | None = None) -> tuple[float, float]:
    """RMSE and R^2 of the closure tendency against the target, over all held-out samples.

    A closure with memory is given the true states before each sample (`before` precedes the first).
    """
    flat = X.reshape(-1, X.shape[-1])
    if model.memory:
        pred = model.closure(flat, histories(X, before, model.memory).reshape(-1, model.memory, X.shape[-1]))
    else:
        pred = model.closure(flat)
    ref = target.reshape(pred.shape)
    return float(M.rmse(pred, ref)), M.r2_score(pred, ref)


def forecast_windows(X: np.ndarray, per_forecast: int, per_trajectory: int,
                     before: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Split held-out trajectories into consecutive forecast windows: X0 (N, K), truth (N, T+1, K)
    and, given the states `before` each trajectory, the states observed before each X0 (N, n, K)."""
    starts = [j * per_forecast for j in range(per_trajectory)]
    truth = np.concatenate([X[:, s : s + per_forecast + 1] for s in starts])
    past = None
    if before is not None:
        n = before.shape[1]
        full = np.concatenate([before, X], axis=1)
        past = np.concatenate([full[:, s : s + n] for s in starts])
    return truth[:, 0], truth, past


def forecast_errors(model: HybridModel, X0: np.ndarray, truth: np.ndarray, seed: int, desc: str,
                    history: np.ndarray | None = None) -> np.ndarray:
    """Forecast minus truth, shape (N, T+1, K); a closure with memory starts from the true history."""
    steps = truth.shape[1] - 1
    with progress(total=steps, desc=desc, unit="step") as bar:
        pred = model.rollout(X0, steps, seed=seed, bar=bar, history=history if model.memory else None)
    with np.errstate(invalid="ignore", over="ignore"):
        return pred - truth


def forecast_scores(name: str, err: np.ndarray, truth: np.ndarray, climate_mean: float, lead_steps: dict[str, int],
                    mean_steps: int, mean_label: str, n_boot: int, seed: int) -> list[dict[str, Any]]:
    sq = np.nan_to_num(np.mean(err**2, axis=-1), nan=1e12, posinf=1e12)  # (N, T+1); a blow-up is an error
    rows = []
    for label, s in lead_steps.items():
        stat = lambda x: float(np.sqrt(np.mean(x)))  # noqa: E731
        rows.append(row(name, f"forecast_rmse_{label}", stat(sq[:, s]),
                        M.bootstrap_ci(sq[:, s], stat, n_boot, seed=seed)))
        acc = M.anomaly_correlation(truth[:, s] + err[:, s], truth[:, s], climate_mean)
        acc = np.nan_to_num(acc, nan=0.0)
        rows.append(row(name, f"acc_{label}", float(acc.mean()), M.bootstrap_ci(acc, np.mean, n_boot, seed=seed)))
    window = sq[:, 1 : mean_steps + 1]
    stat = lambda x: float(np.mean(np.sqrt(np.mean(x, axis=0))))  # noqa: E731
    rows.append(row(name, f"mean_rmse_{mean_label}", stat(window), M.bootstrap_ci(window, stat, n_boot, seed=seed)))
    return rows


def paired_lead(ours: str, sq_ours: np.ndarray, others: dict[str, np.ndarray], metric: str, n_boot: int,
                seed: int) -> dict[str, Any] | None:
    """RMSE of the best of `others` minus ours at one lead, with a paired bootstrap interval.

    Both are resampled with the same initial states, so an interval above zero means the lead is real.
    """
    if not others:
        return None
    best = min(others, key=lambda m: np.mean(others[m]))
    pair = np.stack([sq_ours, others[best]], axis=1)
    stat = lambda x: float(np.sqrt(np.mean(x[:, 1])) - np.sqrt(np.mean(x[:, 0])))  # noqa: E731
    return row(ours, metric, stat(pair), M.bootstrap_ci(pair, stat, n_boot, seed=seed),
               versus=best)


def climate_run(model: HybridModel, X0: np.ndarray, steps: int, record_every: int, seed: int,
                desc: str, history: np.ndarray | None = None) -> np.ndarray:
    with progress(total=steps, desc=desc, unit="step") as bar:
        return model.rollout(X0, steps, record_every=record_every, seed=seed, bar=bar,
                             history=history if model.memory else None)


def climate_scores(name: str, runs: np.ndarray, truth_pdf: np.ndarray, truth_acf: np.ndarray, bins: np.ndarray,
                   max_lag: int, bound: float) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    with np.errstate(invalid="ignore"):
        ok = np.all(np.isfinite(runs), axis=(1, 2)) & (np.nanmax(np.abs(runs), axis=(1, 2)) < bound)
    rows = [row(name, "bounded_fraction", ok.mean())]
    if not ok.any():
        return rows, np.full_like(truth_pdf, np.nan), np.full_like(truth_acf, np.nan)
    pdf = M.histogram_pdf(runs[ok], bins)
    acf = M.autocorrelation(runs[ok], max_lag)
    rows += [row(name, "hellinger", M.hellinger(pdf, truth_pdf)), row(name, "acf_rmse", M.rmse(acf, truth_acf))]
    return rows, pdf, acf


def time_call(fn, repeats: int = 1) -> float:
    """Best wall time of `repeats` calls (the least disturbed by other work on a shared machine)."""
    best = np.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def cost_comparison(case, models: dict[str, HybridModel], X_attractor: np.ndarray, K: int, J: int,
                    seed: int) -> dict[str, float]:
    """Wall time of the full two-scale solver ("full") and of each hybrid model for the same ensemble and
    simulated time."""
    s = case.solver
    truth = TwoScaleLorenz96(K, J, s.F, s.h, s.b, s.c, s.y_periodicity)
    rng = np.random.default_rng(seed)
    n = case.evaluate.cost_ensemble
    rows = X_attractor[rng.integers(0, len(X_attractor), n)]
    X0 = np.tile(rows, (1, (K + rows.shape[1] - 1) // rows.shape[1]))[:, :K].copy()
    Y0 = 0.1 * rng.standard_normal((n, K, J))
    coarse_steps = case.steps(case.evaluate.cost_mtu)
    fine_steps = coarse_steps * case.data.sample_every

    def full():
        X, Y = X0, Y0
        for _ in range(fine_steps):
            X, Y = truth.step(X, Y, s.dt)

    times = {"full": time_call(full)}
    for name, model in models.items():
        # a closure with memory is timed from a constant history: its cost does not depend on the values
        past = np.repeat(X0[:, None], model.memory, axis=1) if model.memory else None
        with torch.no_grad():
            model.rollout(X0[:2], 2, history=None if past is None else past[:2])  # warm-up: first calls allocate
        times[name] = time_call(lambda m=model, h=past: m.rollout(X0, coarse_steps, history=h), repeats=3)
    return times

"""Metrics, each defined once and named for what it computes."""
from __future__ import annotations

from statistics import NormalDist
from typing import Callable

import numpy as np


def rmse(pred: np.ndarray, ref: np.ndarray, axis=None) -> np.ndarray:
    """Root mean squared error over `axis` (all axes by default)."""
    return np.sqrt(np.mean((np.asarray(pred) - np.asarray(ref)) ** 2, axis=axis))


def anomaly_correlation(pred: np.ndarray, ref: np.ndarray, climate_mean: float | np.ndarray,
                        axis: int = -1) -> np.ndarray:
    """Centred anomaly correlation of each forecast with the truth, over `axis` (the spatial axis)."""
    fa = np.asarray(pred) - climate_mean
    oa = np.asarray(ref) - climate_mean
    fa = fa - fa.mean(axis=axis, keepdims=True)
    oa = oa - oa.mean(axis=axis, keepdims=True)
    num = (fa * oa).sum(axis=axis)
    den = np.sqrt((fa**2).sum(axis=axis) * (oa**2).sum(axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def bootstrap_ci(
    per_sample: np.ndarray, statistic: Callable[[np.ndarray], float], n_boot: int = 1000,
    level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic`, resampling the first axis of `per_sample`."""
    per_sample = np.asarray(per_sample)
    rng = np.random.default_rng(seed)
    n = per_sample.shape[0]
    idx = rng.integers(0, n, size=(n_boot, n))
    stats = np.array([statistic(per_sample[i]) for i in idx])
    lo, hi = np.nanpercentile(stats, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


def histogram_pdf(values: np.ndarray, bins: np.ndarray) -> np.ndarray:
    """Probability mass per bin (values outside the bins are counted in the edge bins)."""
    v = np.clip(np.asarray(values).ravel(), bins[0], bins[-1])
    v = v[np.isfinite(v)]
    counts, _ = np.histogram(v, bins=bins)
    return counts / max(counts.sum(), 1)


def hellinger(p: np.ndarray, q: np.ndarray) -> float:
    """Hellinger distance between two discrete distributions (0 = equal, 1 = disjoint)."""
    p = np.asarray(p, float) / np.sum(p)
    q = np.asarray(q, float) / np.sum(q)
    return float(np.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))


def autocorrelation(series: np.ndarray, max_lag: int, time_axis: int = 1) -> np.ndarray:
    """Autocorrelation at lags 0..max_lag, pooled over every other axis (anomalies about the pooled mean)."""
    x = np.moveaxis(np.asarray(series, float), time_axis, 0)
    x = x - x.mean()
    var = np.mean(x**2)
    n = x.shape[0]
    return np.array([np.mean(x[: n - lag] * x[lag:]) / var for lag in range(max_lag + 1)])


def relative_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Global relative L2 error ||pred - ref|| / ||ref|| over all values."""
    pred, ref = np.asarray(pred).ravel(), np.asarray(ref).ravel()
    return float(np.linalg.norm(pred - ref) / np.linalg.norm(ref))


def r2_score(pred: np.ndarray, ref: np.ndarray) -> float:
    """Coefficient of determination over all values."""
    ref = np.asarray(ref)
    return float(1.0 - np.sum((np.asarray(pred) - ref) ** 2) / np.sum((ref - ref.mean()) ** 2))


# PLAID / MMGP paper metrics (Casenave et al. 2023, arXiv:2305.12871, section 4): each sample is
# normalised by its own size and magnitude, unlike a global relative L2 error.
#   field:  RRMSE_f = sqrt( 1/n sum_i ||U_i^ref - U_i^pred||_2^2 / (N_i ||U_i^ref||_inf^2) )
#   scalar: RRMSE_s = sqrt( 1/n sum_i (w_i^ref - w_i^pred)^2 / (w_i^ref)^2 )
#   Q2 = 1 - sum_i ||U_i^ref - U_i^pred||^2 / sum_i ||U_i^ref - mean(U^ref)||^2   (all values concatenated)

def rrmse_field(refs: list[np.ndarray], preds: list[np.ndarray]) -> float:
    per = [np.sum((r - p) ** 2) / (r.size * np.max(np.abs(r)) ** 2) for r, p in zip(refs, preds)]
    return float(np.sqrt(np.mean(per)))


def rrmse_scalar(refs: np.ndarray, preds: np.ndarray) -> float:
    refs, preds = np.asarray(refs, float), np.asarray(preds, float)
    return float(np.sqrt(np.mean(((refs - preds) / refs) ** 2)))


def q2(refs: list[np.ndarray] | np.ndarray, preds: list[np.ndarray] | np.ndarray) -> float:
    r = np.concatenate([np.ravel(x) for x in refs])
    p = np.concatenate([np.ravel(x) for x in preds])
    return float(1 - np.sum((r - p) ** 2) / np.sum((r - r.mean()) ** 2))


def coverage(refs: list[np.ndarray], means: list[np.ndarray], stds: list[np.ndarray], level: float) -> float:
    """Fraction of reference values inside the central Gaussian interval of the given level
    (per sample, then averaged over samples, so big meshes do not dominate)."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return float(np.mean([np.mean(np.abs(np.ravel(r) - np.ravel(m)) <= z * np.ravel(s))
                          for r, m, s in zip(refs, means, stds)]))

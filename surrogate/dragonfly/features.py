"""From a run's windowed port counters to per-iteration inputs of the forecasters (numpy only).

The forecasters see one step per iteration of the target job: the port counters of the windows that
overlap the iteration, weighted by the overlap and turned into rates (bytes per µs, fraction of time
the port's downstream buffer was full, stalls per µs), shape (iteration, router, port, 3), and the
iteration's runtime. `node_features` reduces the ports of each router to per-class statistics
normalised by the class bandwidth, so the same model runs on every Dragonfly size.
"""
from __future__ import annotations

import numpy as np
import xarray as xr

from .simulator import GIB_PER_S_TO_BYTES_PER_NS, NetworkConfig
from .topology import GLOBAL, LOCAL, TERMINAL, Dragonfly

COUNTERS = ("bytes_per_us", "busy_fraction", "stalls_per_us")
NODE_FEATURES = tuple(f"{cls}_{stat}" for cls in ("local", "global", "terminal")
                      for stat in ("util_mean", "util_max", "busy_mean", "busy_max", "stall_mean")) + ("job_share",)
N_NODE_FEATURES = len(NODE_FEATURES)


def iteration_counters(ds: xr.Dataset, job: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Counters per iteration of `job` as rates, (iteration, router, port, 3), and its runtimes (µs)."""
    ends = ds["iteration_end"].values[job]
    runtime = ds["iteration_runtime"].values[job]
    ok = np.isfinite(ends)
    ends, runtime = ends[ok], runtime[ok]
    rates = iteration_rates(ds["window_end"].values, float(ds.attrs["window_us"]), ds["port_bytes"].values,
                            ds["port_busy_time"].values, ds["port_stalls"].values, ends - runtime, ends)
    return rates, runtime


def iteration_rates(window_end_us, window_us: float, port_bytes, port_busy_us, port_stalls, starts_us,
                    ends_us) -> np.ndarray:
    """Windowed counters (window, router, port) -> rates over [start, end) intervals, (interval, router, port, 3)."""
    w_end = np.asarray(window_end_us, float)
    starts, ends = np.asarray(starts_us, float), np.asarray(ends_us, float)
    overlap = np.clip(np.minimum(ends[:, None], w_end[None]) - np.maximum(starts[:, None], w_end[None] - window_us),
                      0, None)
    span = np.maximum(ends - starts, 1e-9)[:, None, None]
    rates = [np.einsum("iw,wrp->irp", overlap, np.nan_to_num(np.asarray(c, np.float64)) / window_us) / span
             for c in (port_bytes, port_busy_us, port_stalls)]
    return np.stack(rates, axis=-1)


def job_share(topo: Dragonfly, job_node_router: np.ndarray) -> np.ndarray:
    """Fraction of each router's terminals used by a job (routers of its ranks; -1 entries ignored)."""
    r = np.asarray(job_node_router)
    r = r[r >= 0]
    return np.bincount(r, minlength=topo.n_routers) / topo.p


def node_features(counters: np.ndarray, topo: Dragonfly, share: np.ndarray,
                  config: NetworkConfig | None = None) -> np.ndarray:
    """(..., router, port, 3) counter rates -> (..., router, N_NODE_FEATURES) per-class statistics."""
    cfg = config or NetworkConfig()
    out = []
    for cls, name in ((LOCAL, "local"), (GLOBAL, "global"), (TERMINAL, "terminal")):
        ports = topo.port_class == cls
        c = counters[..., ports, :]
        bw = cfg.bandwidth_gib_s[name] * GIB_PER_S_TO_BYTES_PER_NS * 1e3      # bytes per µs
        util = c[..., 0] / bw
        busy = c[..., 1]
        out += [util.mean(-1), util.max(-1), busy.mean(-1), busy.max(-1), np.log1p(c[..., 2].mean(-1))]
    out.append(np.broadcast_to(share, counters.shape[:-2]))
    return np.stack(out, axis=-1).astype(np.float32)


def router_edges(topo: Dragonfly) -> tuple[np.ndarray, np.ndarray]:
    """Directed router links as (2, E) edge index and their class (0 local, 1 global)."""
    links = topo.router_links()
    return np.stack([links["src"], links["dst"]]), (links["cls"] == GLOBAL).astype(np.int64)


def check_counters(counters, topo: Dragonfly, steps: int | None = None) -> np.ndarray:
    """Validate a counter window: finite, non-negative, shape (steps, n_routers, radix, 3)."""
    c = np.asarray(counters, dtype=np.float64)
    want = f"({steps if steps else 'L'}, {topo.n_routers}, {topo.radix}, {len(COUNTERS)})"
    if c.ndim != 4 or c.shape[1:] != (topo.n_routers, topo.radix, len(COUNTERS)) or (steps and c.shape[0] != steps):
        raise ValueError(f"expected counters_window with shape {want} = (iterations, routers, ports, "
                         f"[{', '.join(COUNTERS)}]) for {topo!r}, got {c.shape}")
    if not np.all(np.isfinite(c)):
        bad = np.argwhere(~np.isfinite(c))[0]
        raise ValueError(f"counters_window has a non-finite value (NaN or inf) at index {tuple(int(x) for x in bad)}"
                         f" (iteration, router, port, counter); every counter must be a finite number >= 0")
    if c.min() < 0:
        raise ValueError("counters_window has a negative counter; counters are rates >= 0")
    return c

"""Logic of the explorer's Dragonfly page (no Streamlit here): a held-out scenario's port load on the
topology over time, and each method's runtime forecast against the simulated runtime.

Functions that read a run return (value, why not) instead of raising on a broken folder.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HELD_OUT = ("test_seeds", "test_unseen", "test_transfer")
SPLIT_LABELS = {"test_seeds": "new placement seeds", "test_unseen": "unseen co-runner mix",
                "test_transfer": "1,056-node transfer"}


def scenarios(run_path: str | Path) -> list[dict[str, Any]]:
    """The held-out scenarios of a run: name, split, index and a label from the file's attributes."""
    from surrogate.core.store import read_data

    data = Path(run_path) / "data"
    out = []
    for split in HELD_OUT:
        files = sorted(data.glob(f"{split}_*.nc")) or sorted(data.glob(f"{split}_*.zarr"))
        for f in files:
            try:
                attrs = read_data(f.with_suffix(".nc")).attrs
            except Exception:  # a damaged file: leave it out of the list, the page says nothing breaks
                continue
            out.append({"name": f.stem, "split": split, "index": int(f.stem.rsplit("_", 1)[1]),
                        "label": f"{SPLIT_LABELS[split]}: {attrs.get('preset')} {attrs.get('target_app')} with "
                                 f"{attrs.get('corunner_apps') or 'no co-runners'}"})
    return out


def load_scenario(run_path: str | Path, name: str):
    from surrogate.core.store import read_data

    return read_data(Path(run_path) / "data" / f"{name}.nc")


def router_load(ds) -> np.ndarray:
    """(window, router) bytes per microsecond through each router's ports (all classes)."""
    window_us = float(np.diff(ds.window_end.values[:2])[0]) if ds.sizes["window"] > 1 else 1.0
    return ds.port_bytes.values.sum(-1) / window_us


def target_routers(ds) -> np.ndarray:
    routers = ds.job_node_router.values[0]
    return np.unique(routers[routers >= 0])


def topology_figure(ds, window: int) -> bytes:
    """Routers on a circle, grouped (one arc per group), coloured by their load in one window; the
    target job's routers ringed. PNG bytes (drawn without pyplot: the app renders from threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    load = router_load(ds)
    groups = ds.router_group.values
    n_groups = int(groups.max()) + 1
    per_group = np.bincount(groups, minlength=n_groups)
    slot = np.array([np.sum(groups[:r] == groups[r]) for r in range(len(groups))])
    angle = 2 * np.pi * (groups + (slot + 0.5) / per_group[groups] * 0.8) / n_groups
    x, y = np.cos(angle), np.sin(angle)
    fig = Figure(figsize=(4.6, 4.2), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    vmax = max(float(load.max()), 1e-9)
    dots = ax.scatter(x, y, c=load[window], s=60, cmap="viridis", vmin=0, vmax=vmax)
    tr = target_routers(ds)
    ax.scatter(x[tr], y[tr], s=160, facecolors="none", edgecolors="crimson", linewidths=1.5, label="target job")
    for g in range(n_groups):
        a = 2 * np.pi * (g + 0.4) / n_groups
        ax.text(1.18 * np.cos(a), 1.18 * np.sin(a), f"g{g}", ha="center", va="center", fontsize=7)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.legend(loc="lower left", fontsize=7, frameon=False)
    fig.colorbar(dots, ax=ax, label="bytes / µs through the router", shrink=0.8)
    ax.set_title(f"window {window} (ends at {ds.window_end.values[window]:.0f} µs)", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def load_frame(ds) -> pd.DataFrame:
    """Long table for a heatmap: window end time, router, load."""
    load = router_load(ds)
    w, r = np.meshgrid(ds.window_end.values, ds.router.values, indexing="ij")
    return pd.DataFrame({"time_us": w.ravel(), "router": r.ravel(), "load": load.ravel()})


def forecasts(run_path: str | Path, split: str, index: int) -> tuple[pd.DataFrame | None, str]:
    """Per forecast iteration: the simulated runtime and each method's median and 80% interval."""
    from surrogate.core.store import read_netcdf

    path = Path(run_path) / "predictions.nc"
    if not path.exists():
        return None, "This run has no predictions.nc (its evaluation did not finish)."
    try:
        p = read_netcdf(path)
    except Exception as err:
        return None, f"predictions.nc is unreadable ({type(err).__name__}: {err})"
    try:
        return _forecast_rows(p, split, index)
    except (KeyError, ValueError, IndexError) as err:  # a predictions file of another layout
        return None, f"predictions.nc does not have the expected forecasts ({type(err).__name__}: {err})"


def _forecast_rows(p, split: str, index: int) -> tuple[pd.DataFrame | None, str]:
    pick = (p.split.values == split) & (p.scenario.values == index)
    if not pick.any():
        return None, "No forecasts of this scenario in predictions.nc."
    q = list(np.round(p["quantile"].values, 3))
    rows = []
    for m in p.method.values:
        qs = p.runtime_quantiles.sel({"method": m}).values[pick]  # a dict: `method=` is sel's own keyword
        for it, ref, row in zip(p.forecast_iteration.values[pick], p.runtime_reference.values[pick], qs):
            rows.append({"iteration": int(it), "method": str(m), "simulated": float(ref),
                         "median": float(row[q.index(0.5)]), "low80": float(row[q.index(0.1)]),
                         "high80": float(row[q.index(0.9)])})
    return pd.DataFrame(rows), ""


def scenario_errors(frame: pd.DataFrame) -> pd.DataFrame:
    """MAPE (%) and 80% coverage per method on this scenario, best first."""
    err = 100 * (frame["median"] - frame["simulated"]).abs() / frame["simulated"]
    inside = (frame["low80"] <= frame["simulated"]) & (frame["simulated"] <= frame["high80"])
    table = pd.DataFrame({"method": frame["method"], "APE": err, "inside80": inside})
    out = table.groupby("method", sort=False).agg(MAPE_percent=("APE", "mean"), coverage80=("inside80", "mean"))
    return out.sort_values("MAPE_percent").reset_index()

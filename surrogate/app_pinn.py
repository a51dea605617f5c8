"""What the explorer's PINN page computes: a trained field beside its reference on the run's test grid,
the absolute error, PIG's Gaussian centres, and the relative L2 error at a chosen time.

No Streamlit here (the page only lays these out). Functions that read a run return (value, why not)
instead of raising on a broken folder, so one bad run cannot take the page down.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

METHOD_LABELS = {"pig": "PIG", "pinn": "deepxde PINN (baseline)"}


def method_label(name: str) -> str:
    return METHOD_LABELS.get(name, name)



def read_reference(run_path: str | Path) -> tuple[xr.Dataset | None, str]:
    """The reference solution on the test grid (data/reference.nc), or (None, why not)."""
    from surrogate.core.store import data_path, read_data

    p = Path(run_path) / "data" / "reference.nc"
    if data_path(p) is None:
        return None, "This run has no data/reference.nc (its solver stage did not finish)."
    try:
        ref = read_data(p)
    except Exception as err:  # a truncated or foreign file: say so, the page keeps working
        return None, f"data/reference.nc is unreadable ({type(err).__name__}: {err})"
    if "u" not in ref.data_vars:
        return None, "data/reference.nc has no variable u."
    return ref, ""


def time_values(reference: xr.Dataset) -> np.ndarray | None:
    """The reference's times (the last coordinate of a time-dependent PDE), None for a steady one."""
    return np.asarray(reference["t"].values, float) if "t" in reference["u"].dims else None


@dataclass
class FieldView:
    """One picture's worth of the field: a plane (horizontal axis h, vertical axis v) of prediction,
    reference and |error|, the time it shows, and for one space dimension the profile at that time."""

    h: str
    v: str
    h_values: np.ndarray
    v_values: np.ndarray
    prediction: np.ndarray  # (len(v_values), len(h_values))
    reference: np.ndarray
    error: np.ndarray
    time: float | None
    rel_l2: float  # at the chosen time (over the whole field for a steady PDE)
    profile: pd.DataFrame | None = None  # u(x) at the chosen time, for one space dimension
    labels: dict[str, str] | None = None

    def label(self, c: str) -> str:
        return (self.labels or {}).get(c, c)


def relative_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """||pred - ref|| / ||ref||; nan when the reference is zero there (e.g. a zero initial state)."""
    norm = float(np.linalg.norm(np.ravel(ref)))
    return float(np.linalg.norm(np.ravel(pred) - np.ravel(ref)) / norm) if norm > 0 else float("nan")


def field_view(model, reference: xr.Dataset, time_index: int | None = None) -> FieldView:
    """Evaluate `model` where the reference lives and cut the plane to show.

    Two space dimensions and time: the (x, y) plane at the chosen time (only that slice is evaluated,
    so a fine 3D grid stays cheap). One space dimension and time: the whole (x, t) plane plus the
    profile at the chosen time. Steady: the (x, y) plane.
    """
    from surrogate.pinn.pdes import cf_order, grid_points, grid_shape

    coords = tuple(model.coords)
    u_ref = reference["u"]
    if set(u_ref.dims) != set(coords):
        raise ValueError(f"the reference grid ({', '.join(map(str, u_ref.dims))}) does not match the model's "
                         f"coordinates ({', '.join(coords)})")
    space = [c for c in coords if c != "t"]
    time_dependent = "t" in coords
    grid = {c: np.asarray(reference[c].values, float) for c in coords}
    if time_dependent:
        n_t = len(grid["t"])
        time_index = min(max(int(time_index or 0), 0), n_t - 1)
    if time_dependent and len(space) >= 2:
        grid["t"] = grid["t"][time_index: time_index + 1]
        u_ref = u_ref.isel(t=slice(time_index, time_index + 1))
    pred = xr.DataArray(model(grid_points(grid, coords)).reshape(grid_shape(grid, coords)),
                        dims=cf_order(coords), coords={c: grid[c] for c in coords})
    h, v = (space[0], space[1]) if len(space) >= 2 else (space[0], "t")
    pred_plane = pred.isel({c: 0 for c in pred.dims if c not in (h, v)}).transpose(v, h).values
    ref_plane = u_ref.isel({c: 0 for c in u_ref.dims if c not in (h, v)}).transpose(v, h).values
    time = float(grid["t"][0] if len(space) >= 2 else grid["t"][time_index]) if time_dependent else None
    profile = None
    if time_dependent and len(space) == 1:
        at_t_pred, at_t_ref = pred_plane[time_index], ref_plane[time_index]
        rel = relative_l2(at_t_pred, at_t_ref)
        profile = pd.DataFrame({"prediction": at_t_pred, "reference": at_t_ref},
                               index=pd.Index(np.round(grid[h], 6), name=h))
    else:
        rel = relative_l2(pred_plane, ref_plane)
    labels = {c: str(reference[c].attrs.get("long_name", c)) for c in coords}
    return FieldView(h=h, v=v, h_values=grid[h], v_values=np.asarray(reference[v].values, float),
                     prediction=pred_plane, reference=ref_plane, error=np.abs(pred_plane - ref_plane), time=time,
                     rel_l2=rel, profile=profile, labels=labels)


def gaussian_centres(model, view: FieldView, reach: float = 2.0) -> tuple[np.ndarray, int] | None:
    """PIG's Gaussian means projected on the view's plane, and how many there are in all; None for a
    model that is not a PIG.

    On an (x, y) plane at time t only the Gaussians that reach t (|t_c - t| <= reach * sigma_t) are
    kept: the others do not shape the field there.
    """
    from surrogate.pinn.pig import PIG

    module = getattr(model, "module", None)
    if not isinstance(module, PIG):
        return None
    coords = list(model.coords)
    centres = module.centres().detach().double().numpy().reshape(-1, len(coords))
    total = len(centres)
    if view.time is not None and view.v != "t":
        j = coords.index("t")
        sigma_t = np.abs(module.sigma.detach().double().numpy().reshape(-1, len(coords))[:, j])
        sigma_t = sigma_t / float(module.scale[j])
        centres = centres[np.abs(centres[:, j] - view.time) <= reach * sigma_t]
    return centres[:, [coords.index(view.h), coords.index(view.v)]], total


def field_figure(view: FieldView, centres: np.ndarray | None = None, method: str = "") -> bytes:
    """Prediction of `method` (with the Gaussian centres), reference and |error| side by side, as PNG bytes.

    A bare matplotlib Figure (no pyplot): the app renders from several threads.
    """
    from matplotlib.figure import Figure

    low = float(np.nanmin([view.prediction.min(), view.reference.min()]))
    high = float(np.nanmax([view.prediction.max(), view.reference.max()]))
    fig = Figure(figsize=(15, 4.3), layout="constrained")
    axes = fig.subplots(1, 3)
    predicted = f"{method} prediction".strip() + (" and Gaussian centres" if centres is not None else "")
    panels = [(view.prediction, predicted, "RdBu_r"),
              (view.reference, "reference", "RdBu_r"), (view.error, "|prediction - reference|", "magma")]
    for ax, (values, name, cmap) in zip(axes, panels):
        limits = {"vmin": low, "vmax": high} if cmap == "RdBu_r" else {}
        # cells centred on the grid points, which need not be evenly spaced
        im = ax.pcolormesh(view.h_values, view.v_values, values, shading="nearest", cmap=cmap, **limits)
        fig.colorbar(im, ax=ax)
        ax.set(xlabel=view.label(view.h), ylabel=view.label(view.v), title=name)
        if view.v == "t" and view.time is not None:  # the chosen time on the (x, t) plane
            ax.axhline(view.time, color="grey" if cmap == "magma" else "black", lw=0.8, ls="--")
    if centres is not None and len(centres):
        xlim, ylim = axes[0].get_xlim(), axes[0].get_ylim()  # centres that drifted outside stay out of view
        axes[0].scatter(centres[:, 0], centres[:, 1], s=8, c="black", marker="x", linewidths=0.8)
        axes[0].set(xlim=xlim, ylim=ylim)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()

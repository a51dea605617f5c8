"""What the explorer's MMGP page computes: a trained model's fields and their standard deviation on a
test shape or an uploaded mesh, for scalars chosen within the training range, and, for test shapes,
the solver's field and the error.

No Streamlit here (the page only lays these out). Functions that read a run return (value, why not)
instead of raising on a broken folder, so one bad run cannot take the page down.
"""
from __future__ import annotations

import io
import json
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from surrogate.app_logic import case_text, check_in_range

# the model's inputs and fields, written here so the page works without importing the family
SCALARS = ("load", "shear", "young")
FIELD_LABELS = {"u1": "horizontal displacement u1 (mm)", "u2": "vertical displacement u2 (mm)",
                "von_mises": "von Mises stress (MPa)"}


# ------------------------------------------------------------------ the run

def needs_shape_parameters(run_path: str | Path, method: str) -> bool:
    """The oracle baseline reads the generator's shape parameters, which an uploaded mesh does not have."""
    try:
        info = json.loads((Path(run_path) / "model" / f"{method}.json").read_text())
    except (OSError, ValueError):
        return False
    settings = info.get("settings") if isinstance(info, dict) else None
    return isinstance(settings, dict) and settings.get("shape_input") == "true_parameters"


def test_shapes(run_path: str | Path) -> list[str]:
    """Names of the held-out shapes in data/ (test_0000, ...), NetCDF or Zarr."""
    data = Path(run_path) / "data"
    names = {p.name.split(".")[0] for pattern in ("test_*.nc", "test_*.zarr") for p in data.glob(pattern)}
    return sorted(names)


def read_test_shape(run_path: str | Path, name: str):
    """One held-out shape as a `surrogate.mmgp.data.Sample` (nodes, triangles, fields, inputs, outputs)."""
    from surrogate.core.store import data_path
    from surrogate.mmgp.data import read_sample

    path = data_path(Path(run_path) / "data" / f"{name}.nc")
    if path is None:
        raise FileNotFoundError(f"no data/{name}.nc in this run")
    return read_sample(path)


def scalar_ranges(run_path: str | Path) -> tuple[dict[str, tuple[float, float]], str]:
    """The training range of each scalar input, from the run's resolved case (physics.load etc.)."""
    try:
        case = yaml.safe_load(case_text(run_path) or "{}") or {}
        physics = case.get("physics") or {}
        ranges = {k: (float(physics[k][0]), float(physics[k][1])) for k in SCALARS}
    except (yaml.YAMLError, AttributeError, KeyError, IndexError, TypeError, ValueError):
        return {}, "The run's case.yaml does not give the training range of load, shear and young."
    return {k: (min(lo, hi), max(lo, hi)) for k, (lo, hi) in ranges.items()}, ""


def check_scalars(values: dict[str, float], ranges: dict[str, tuple[float, float]]) -> list[str]:
    """One sentence per scalar outside its training range (the GP does not extrapolate sensibly)."""
    return [msg for k in SCALARS if (msg := check_in_range(values.get(k), *ranges[k], k))]


# ------------------------------------------------------------------ uploaded meshes
def mesh_from_upload(name: str, data: bytes) -> tuple[tuple[np.ndarray, np.ndarray] | None, str]:
    """(planar nodes, counter-clockwise triangles) of an uploaded mesh, or (None, why it cannot be used).

    Call `app_logic.check_mesh_upload` first for the "is this a mesh at all" message.
    """
    from surrogate.mmgp.meshes import read_mesh
    from surrogate.mmgp.morphing import MeshError, check_mesh

    suffix = Path(name).suffix.lower()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        try:
            return check_mesh(*read_mesh(path), what=name), ""
        except (MeshError, ValueError, TypeError, OSError) as err:
            return None, f"{name} cannot be used by this model: {err}".replace(str(path), name)


# ------------------------------------------------------------------ prediction
@dataclass
class Prediction:
    """Every field's mean and standard deviation on the mesh nodes (std None: the method gives none)."""

    nodes: np.ndarray
    triangles: np.ndarray
    fields: dict[str, tuple[np.ndarray, np.ndarray | None]]
    scalars: dict[str, tuple[float, float | None]]
    shape_distance: float | None = None
    shape_distance_limit: float | None = None
    warnings: list[str] = field(default_factory=list)


def predict(model, nodes: np.ndarray, triangles: np.ndarray, inputs: dict[str, float],
            shape_parameters: np.ndarray | None = None) -> Prediction:
    """The model's prediction, with the warnings it gives (a shape far from the training shapes) kept."""
    from surrogate.mmgp.morphing import check_mesh

    nodes, triangles = check_mesh(nodes, triangles)
    values = np.array([float(inputs[k]) for k in SCALARS])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = model.predict_arrays(nodes, triangles, values, shape_parameters)
    fields = {k: (np.asarray(m, float), None if s is None else np.asarray(s, float))
              for k, (m, s) in out["fields"].items()}
    scalars = {k: (float(m), None if s is None else float(s)) for k, (m, s) in out["scalars"].items()}
    return Prediction(nodes=nodes, triangles=triangles, fields=fields, scalars=scalars,
                      shape_distance=out.get("shape_distance"), shape_distance_limit=out.get("shape_distance_limit"),
                      warnings=[str(w.message) for w in caught])


def same_inputs(inputs: dict[str, float], sample) -> bool:
    """Do the chosen scalars equal those the solver used for this test shape?"""
    return bool(np.allclose([float(inputs[k]) for k in SCALARS], sample.inputs, rtol=1e-9, atol=1e-9))


@dataclass
class Panel:
    title: str
    values: np.ndarray
    cmap: str
    shared: bool = False  # drawn on one colour scale with the other shared panels (prediction, solver)


def field_panels(prediction: Prediction, name: str, sample=None) -> list[Panel]:
    """What to draw for one field: prediction, its standard deviation, and with a solved test shape (at
    the same scalars) the solver's field and the absolute error."""
    mean, std = prediction.fields[name]
    panels = [Panel("prediction", mean, "viridis", shared=sample is not None)]
    if std is not None:
        panels.append(Panel("standard deviation", std, "magma"))
    if sample is not None:
        panels += [Panel("solver", sample.fields[name], "viridis", shared=True),
                   Panel("|prediction - solver|", np.abs(mean - sample.fields[name]), "magma")]
    return panels


def field_errors(prediction: Prediction, sample) -> pd.DataFrame:
    """Relative RMS error and 95% coverage of every field against the solver on one test shape."""
    rows = []
    for name, (mean, std) in prediction.fields.items():
        truth = sample.fields[name]
        rms = float(np.sqrt(np.mean(truth**2)))
        rel = float(np.sqrt(np.mean((mean - truth) ** 2)) / rms) if rms > 0 else float("nan")
        inside = float(np.mean(np.abs(mean - truth) <= 1.96 * std)) if std is not None else None
        rows.append({"field": name, "relative RMS error": rel, "share of nodes in the 95% interval": inside})
    return pd.DataFrame(rows)


def scalar_table(prediction: Prediction, sample=None) -> pd.DataFrame:
    """Predicted scalar outputs with their standard deviation, and the solver's value for a test shape."""
    from surrogate.mmgp.fem import SCALAR_OUTPUTS

    rows = []
    for name, (mean, std) in prediction.scalars.items():
        units, long_name = SCALAR_OUTPUTS.get(name, ("", name))
        row: dict[str, Any] = {"output": name, "predicted": mean, "std": std}
        if sample is not None and name in SCALAR_OUTPUTS:
            row["solver"] = float(sample.outputs[list(SCALAR_OUTPUTS).index(name)])
        row.update({"units": units, "meaning": long_name})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ drawing
def pyvista_mesh(nodes: np.ndarray, triangles: np.ndarray, values: np.ndarray, relief: float = 0.0):
    """A pyvista surface of the planar mesh carrying one nodal field; with `relief` > 0 the field is also
    the height, scaled so its range rises to `relief` times the shape's size."""
    import pyvista as pv

    values = np.asarray(values, float)
    span = np.ptp(values)
    height = relief * np.ptp(nodes[:, :2], axis=0).max() * (values - values.min()) / span if span > 0 else 0 * values
    points = np.column_stack([nodes[:, :2], height])
    faces = np.column_stack([np.full(len(triangles), 3), triangles]).ravel()
    mesh = pv.PolyData(points, faces)
    mesh.point_data["value"] = values
    return mesh


def scene_html(nodes: np.ndarray, triangles: np.ndarray, panels: list[Panel], relief: float = 0.0) -> list[str]:
    """One self-contained interactive 3D scene per panel (vtk.js HTML from pyvista's trame export),
    shared panels on one colour scale.

    The export runs in a child process: trame starts a web server there, and its event loop needs
    the main thread of its process, which a Streamlit script thread is not."""
    from concurrent.futures import ProcessPoolExecutor

    limits = _shared_limits(panels)
    jobs = [(p.values, p.cmap, limits if p.shared else None, p.title) for p in panels]
    with ProcessPoolExecutor(max_workers=1, mp_context=_fast_context()) as pool:
        return pool.submit(_export_scenes, nodes, triangles, jobs, relief).result()


def _shared_limits(panels: list[Panel]) -> tuple[float, float] | None:
    shared = [p.values for p in panels if p.shared]
    return (float(min(v.min() for v in shared)), float(max(v.max() for v in shared))) if shared else None


def _fast_context():
    import multiprocessing

    # fork skips re-importing pyvista and trame in the child (about a second)
    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


def _export_scenes(nodes, triangles, jobs, relief) -> list[str]:
    import contextlib
    import os

    # the export is vtk.js; pointing trame's VTK-wasm module at an empty folder keeps it from
    # downloading its wasm bundle (from the internet) every time the server starts
    empty = Path(tempfile.gettempdir()) / "surrogate-no-vtk-wasm"
    empty.mkdir(exist_ok=True)
    os.environ.setdefault("VTK_WASM_DIR_OVERRIDE", str(empty))
    with contextlib.redirect_stdout(io.StringIO()):
        return [_scene(nodes, triangles, relief, *job) for job in jobs]


def _scene(nodes, triangles, relief, values, cmap, limits, title) -> str:
    import pyvista as pv

    plotter = pv.Plotter(off_screen=True, window_size=[360, 480])
    plotter.add_mesh(pyvista_mesh(nodes, triangles, values, relief), cmap=cmap, clim=limits,
                     scalar_bar_args={"title": title})
    plotter.view_xy()
    if relief:
        plotter.camera.elevation = -35
    try:
        return plotter.trame.export_html(filename=None).read()
    finally:
        plotter.close()


def tripcolor_figure(nodes: np.ndarray, triangles: np.ndarray, panels: list[Panel], title: str = "") -> bytes:
    """Panels of nodal values on the triangle mesh side by side (Gouraud-shaded), as PNG bytes.

    The 2D view used when no 3D viewer is available; a bare matplotlib Figure (no pyplot) because the
    app renders from several threads.
    """
    from matplotlib.figure import Figure
    from matplotlib.tri import Triangulation

    tri = Triangulation(nodes[:, 0], nodes[:, 1], triangles)
    span = np.ptp(nodes[:, 1]) / max(np.ptp(nodes[:, 0]), 1e-12)
    width = 3.6 * len(panels)
    fig = Figure(figsize=(width, min(max(3.4 * span, 2.5), 6.0) + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    shared = _shared_limits(panels)
    limits = {"vmin": shared[0], "vmax": shared[1]} if shared else {}
    for ax, panel in zip(axes, panels):
        im = ax.tripcolor(tri, panel.values, shading="gouraud", cmap=panel.cmap, **(limits if panel.shared else {}))
        fig.colorbar(im, ax=ax, shrink=0.85)
        ax.set_aspect("equal")
        ax.set(title=panel.title, xlabel="x (mm)", ylabel="y (mm)")
    if title:
        fig.suptitle(title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()

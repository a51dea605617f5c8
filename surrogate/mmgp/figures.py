"""Field figures: pyvista off-screen (matplotlib when VTK cannot render here)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from surrogate.core.store import atomic_path

PANELS = ("FEM", "prediction", "error", "predictive std")


def field_panels(nodes: np.ndarray, triangles: np.ndarray, reference: np.ndarray, mean: np.ndarray,
                 std: np.ndarray, title: str, units: str, path: Path) -> str:
    """Reference, prediction, error and standard deviation side by side; returns the renderer used."""
    values = [reference, mean, mean - reference, std]
    try:
        _pyvista(nodes, triangles, values, title, units, path)
        return "pyvista"
    except Exception:  # no usable OpenGL context: draw the same panels with matplotlib
        _matplotlib(nodes, triangles, values, title, units, path)
        return "matplotlib"


def _pyvista(nodes, triangles, values, title, units, path: Path) -> None:
    import pyvista as pv

    pv.OFF_SCREEN = True
    cells = np.column_stack([np.full(len(triangles), 3), triangles]).ravel()
    grid = pv.PolyData(np.column_stack([nodes, np.zeros(len(nodes))]), faces=cells)
    plotter = pv.Plotter(shape=(1, 4), off_screen=True, window_size=(1600, 560))
    lo, hi = float(values[0].min()), float(values[0].max())
    err = float(np.abs(values[2]).max()) or 1.0
    limits = [(lo, hi), (lo, hi), (-err, err), (0.0, float(values[3].max()) or 1.0)]
    cmaps = ["viridis", "viridis", "coolwarm", "magma"]
    for j, (name, v) in enumerate(zip(PANELS, values)):
        plotter.subplot(0, j)
        mesh = grid.copy()
        mesh.point_data[name] = v
        plotter.add_mesh(mesh, scalars=name, cmap=cmaps[j], clim=limits[j],
                         scalar_bar_args={"title": f"{name} ({units})", "vertical": False, "n_labels": 3})
        plotter.add_text(name if j else f"{title}\n{name}", font_size=8)
        plotter.view_xy()
    with atomic_path(path, suffix=".png") as tmp:
        plotter.screenshot(str(tmp))
    plotter.close()


def _matplotlib(nodes, triangles, values, title, units, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.tri import Triangulation

    from surrogate.core.report import save_figure

    tri = Triangulation(nodes[:, 0], nodes[:, 1], triangles)
    fig, axes = plt.subplots(1, 4, figsize=(13, 5.2))
    lo, hi = values[0].min(), values[0].max()
    kws = [{"vmin": lo, "vmax": hi}, {"vmin": lo, "vmax": hi}, {"cmap": "coolwarm"}, {"cmap": "magma"}]
    for ax, v, name, kw in zip(axes, values, PANELS, kws):
        im = ax.tripcolor(tri, v, shading="gouraud", **kw)
        ax.set_aspect("equal")
        ax.set_title(f"{name} ({units})", fontsize=9)
        ax.axis("off")
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(title)
    save_figure(fig, path)

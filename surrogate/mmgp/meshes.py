"""Mesh in, mesh out: read any mesh meshio reads, write predictions on the user's own mesh."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from surrogate.core.store import atomic_path
from surrogate.mmgp.data import FIELDS, SCALAR_INPUTS
from surrogate.mmgp.fem import SCALAR_OUTPUTS
from surrogate.mmgp.morphing import MeshError


def read_mesh(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and triangles from a path (any format meshio reads), a meshio.Mesh or a (nodes, triangles) pair."""
    import meshio

    if isinstance(mesh, tuple) and len(mesh) == 2:
        return np.asarray(mesh[0], float), np.asarray(mesh[1])
    if isinstance(mesh, (str, Path)):
        path = Path(mesh)
        if not path.is_file():
            raise FileNotFoundError(f"mesh file {str(path)!r} does not exist")
        try:
            mesh = meshio.read(path)
        except (Exception, SystemExit) as err:  # meshio raises many types (its VTU reader even exits)
            raise MeshError(f"{path}: meshio cannot read this file ({type(err).__name__}: {err}); give a mesh in a "
                            "format meshio reads (.vtu, .msh, .xdmf, ...)") from None
    if not hasattr(mesh, "cells_dict"):
        raise TypeError(f"mesh: expected a file path, a meshio.Mesh or (nodes, triangles), got {type(mesh).__name__}")
    cells = mesh.cells_dict
    if "triangle" not in cells:
        kinds = ", ".join(cells) or "none"
        raise MeshError(f"mesh: no linear triangles (cell types: {kinds}); this case takes 2D triangle meshes")
    return np.asarray(mesh.points, float), np.asarray(cells["triangle"])


def to_prediction_dataset(nodes: np.ndarray, triangles: np.ndarray, inputs: np.ndarray,
                          result: dict[str, Any]) -> xr.Dataset:
    data: dict[str, Any] = {
        "face_nodes": (("face", "three"), triangles.astype(np.int32),
                       {"cf_role": "face_node_connectivity", "start_index": 0, "units": "1",
                        "long_name": "nodes of each triangle"}),
    }
    for f, (mean, std) in result["fields"].items():
        units, long_name = FIELDS[f]
        data[f] = (("node",), mean, {"units": units, "long_name": f"predicted {long_name}",
                                     "surrogate_role": "prediction"})
        data[f"{f}_std"] = (("node",), std, {"units": units, "long_name": f"standard deviation of {long_name}",
                                             "surrogate_role": "uncertainty"})
    for s, (mean, std) in result["scalars"].items():
        units, long_name = SCALAR_OUTPUTS[s]
        data[s] = ((), mean, {"units": units, "long_name": f"predicted {long_name}", "surrogate_role": "prediction"})
        data[f"{s}_std"] = ((), std, {"units": units, "long_name": f"standard deviation of {long_name}",
                                      "surrogate_role": "uncertainty"})
    for (k, (units, long_name)), v in zip(SCALAR_INPUTS.items(), inputs):
        data[k] = ((), float(v), {"units": units, "long_name": long_name, "surrogate_role": "input"})
    data["shape_distance"] = ((), result["shape_distance"], {
        "units": "1", "long_name": "distance to the nearest training shape (standardised shape coefficients)",
        "limit": result["shape_distance_limit"]})
    coords = {"node_x": (("node",), nodes[:, 0], {"units": "mm", "long_name": "x of the mesh nodes"}),
              "node_y": (("node",), nodes[:, 1], {"units": "mm", "long_name": "y of the mesh nodes"})}
    return xr.Dataset(data, coords=coords, attrs={"Conventions": "CF-1.11", "source": "surrogate.mmgp prediction"})


def write_prediction(ds: xr.Dataset, path: str | Path, overwrite: bool = False) -> None:
    """Write the predicted fields and their standard deviations on the user's mesh (any meshio format)."""
    import meshio

    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; nothing was written (choose another name or allow overwriting)")
    points = np.column_stack([ds.node_x.values, ds.node_y.values, np.zeros(ds.sizes["node"])])
    point_data = {k: ds[k].values for k in ds.data_vars if ds[k].dims == ("node",)}
    field_data = {k: np.atleast_1d(ds[k].values) for k in ds.data_vars if ds[k].dims == ()}
    mesh = meshio.Mesh(points, [("triangle", ds.face_nodes.values)], point_data=point_data, field_data=field_data)
    with atomic_path(path, suffix=path.suffix) as tmp:
        meshio.write(tmp, mesh)  # the format follows the extension, which the temporary name keeps


def predict_file(run, mesh_path: str | Path, out_path: str | Path, scalars: dict[str, float],
                 method: str | None = None, overwrite: bool = False) -> xr.Dataset:
    """`surrogate predict RUN --mesh new.vtu -o out.vtu`: predict on the user's mesh and write the fields
    and their standard deviations there. Nothing is written when any input is bad."""
    import surrogate

    out_path = Path(out_path)
    if out_path.exists() and not overwrite:
        raise FileExistsError(f"{out_path} exists; nothing was written (choose another name or allow overwriting)")
    ds = surrogate.load(run, method=method).predict(str(mesh_path), scalars)
    write_prediction(ds, out_path, overwrite=overwrite)
    return ds

"""Solver data: one NetCDF file (UGRID mesh + fields + scalars) and one VTU file per sample.

Each sample is drawn from its own seed (case seed, split, index), so any subset can be regenerated
alone, generation resumes where it stopped, and a larger training set contains the smaller ones.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from surrogate.core.executor import map_tasks
from surrogate.core.store import atomic_path, data_path, read_data, write_data
from surrogate.mmgp.fem import SCALAR_OUTPUTS, NewtonDidNotConverge, solve_specimen
from surrogate.mmgp.geometry import SpecimenFamily, draw_specimen, mesh_specimen

SPLITS = ("train", "test", "ood")
SPLIT_CODES = {"train": 0, "test": 1, "ood": 2}
FIELDS = {
    "u1": ("mm", "horizontal displacement"),
    "u2": ("mm", "vertical displacement"),
    "von_mises": ("MPa", "von Mises stress (Cauchy, plane strain)"),
}
SCALAR_INPUTS = {
    "load": ("MPa", "normal traction on the top edge (per unit reference length)"),
    "shear": ("MPa", "tangential traction on the top edge"),
    "young": ("MPa", "Young's modulus"),
}


@dataclass
class Sample:
    """One solved specimen as the surrogate sees it, plus the generator's hidden shape parameters."""

    name: str
    nodes: np.ndarray  # (N, 2)
    triangles: np.ndarray  # (M, 3)
    fields: dict[str, np.ndarray]  # name -> (N,)
    inputs: np.ndarray  # (len(SCALAR_INPUTS),)
    outputs: np.ndarray  # (len(SCALAR_OUTPUTS),)
    shape_parameters: np.ndarray
    solve_seconds: float


def sample_name(split: str, index: int) -> str:
    return f"{split}_{index:04d}"


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLIT_CODES[split], index])


def solve_sample(task: dict[str, Any]) -> xr.Dataset:
    """Draw, mesh and solve one sample (a solver task: it reads and writes no files)."""
    name = sample_name(task["split"], task["index"])
    family = SpecimenFamily(**task["family"])
    if task["split"] == "ood":
        family = family.out_of_range()
    rng = sample_rng(task["seed"], task["split"], task["index"])
    shape = draw_specimen(family, rng)
    physics = task["physics"]
    inputs = {k: float(rng.uniform(*physics[k])) for k in SCALAR_INPUTS}
    nodes, triangles = mesh_specimen(shape)
    t0 = time.perf_counter()
    steps = physics["load_steps"]
    while True:
        try:
            sol = solve_specimen(nodes, triangles, inputs["load"], inputs["shear"], inputs["young"],
                                 physics["poisson"], physics["model"], steps=steps, tol=physics["newton_tol"])
            break
        except NewtonDidNotConverge:
            # a stiff sample (a thin ligament beside a hole, a large load over a soft material): smaller
            # increments reach the same equilibrium from closer starting points; give up beyond 4x
            if steps >= 4 * physics["load_steps"]:
                raise
            steps *= 2
    seconds = time.perf_counter() - t0
    fields = {"u1": sol.displacement[:, 0], "u2": sol.displacement[:, 1], "von_mises": sol.von_mises}
    ds = to_dataset(nodes, triangles, fields, inputs, sol.scalars, shape.parameters(), name)
    ds.attrs.update(split=task["split"], index=task["index"], mesh_size=shape.mesh_size, solve_seconds=seconds,
                    newton_iterations=sol.newton.iterations if sol.newton else 0, physics_model=physics["model"],
                    load_steps=steps)
    return ds


def to_dataset(nodes, triangles, fields, inputs: dict[str, float], outputs: dict[str, float],
               shape_parameters: np.ndarray | None, title: str) -> xr.Dataset:
    """A sample as a CF-1.11 dataset with a UGRID-1.0 mesh topology."""
    data: dict[str, Any] = {
        "mesh": ((), np.int32(0), {"cf_role": "mesh_topology", "topology_dimension": 2,
                                   "node_coordinates": "node_x node_y", "face_node_connectivity": "face_nodes",
                                   "long_name": "topology of the triangle mesh", "units": "1"}),
        "face_nodes": (("face", "three"), triangles.astype(np.int32),
                       {"cf_role": "face_node_connectivity", "start_index": 0, "long_name": "nodes of each triangle",
                        "units": "1"}),
    }
    for name, values in fields.items():
        units, long_name = FIELDS[name]
        data[name] = (("node",), np.asarray(values, float),
                      {"units": units, "long_name": long_name, "mesh": "mesh", "location": "node"})
    for name, value in inputs.items():
        units, long_name = SCALAR_INPUTS[name]
        data[name] = ((), float(value), {"units": units, "long_name": long_name, "surrogate_role": "input"})
    for name, value in outputs.items():
        units, long_name = SCALAR_OUTPUTS[name]
        data[name] = ((), float(value), {"units": units, "long_name": long_name, "surrogate_role": "output"})
    if shape_parameters is not None:
        data["shape_parameters"] = (("shape_parameter",), np.asarray(shape_parameters, float),
                                    {"units": "1", "long_name": "hidden parameters of the shape generator "
                                     "(oracle baseline only)"})
    coords = {
        "node_x": (("node",), nodes[:, 0], {"units": "mm", "long_name": "x of the mesh nodes",
                                            "standard_name": "projection_x_coordinate"}),
        "node_y": (("node",), nodes[:, 1], {"units": "mm", "long_name": "y of the mesh nodes",
                                            "standard_name": "projection_y_coordinate"}),
    }
    return xr.Dataset(data, coords=coords, attrs={"title": f"mmgp specimen {title}",
                                                   "source": "surrogate.mmgp (gmsh + scikit-fem)"})


def write_vtu(path: Path, nodes: np.ndarray, triangles: np.ndarray, fields: dict[str, np.ndarray]) -> None:
    import meshio

    points = np.column_stack([nodes, np.zeros(len(nodes))])
    mesh = meshio.Mesh(points, [("triangle", triangles)], point_data={k: np.asarray(v) for k, v in fields.items()})
    with atomic_path(path, suffix=".vtu") as tmp:
        meshio.write(tmp, mesh, file_format="vtu")


def generate(out: Path, seed: int, family: SpecimenFamily, physics: dict[str, Any], counts: dict[str, int],
             executor="local", workers: int = 1, log=print, fmt: str = "netcdf") -> None:
    """Solve every missing sample of every split into `out` (one solver task per sample)."""
    family_dict = family.settings()
    tasks = [{"split": split, "index": i, "seed": seed, "family": family_dict, "physics": physics}
             for split in SPLITS for i in range(counts[split])]
    todo = [t for t in tasks if not data_path(out / f"{sample_name(t['split'], t['index'])}.nc")]
    log(f"data: {len(tasks) - len(todo)} of {len(tasks)} samples present")

    def write(i: int, ds: xr.Dataset) -> None:
        name = sample_name(todo[i]["split"], todo[i]["index"])
        fields = {f: ds[f].values for f in FIELDS}
        nodes = np.column_stack([ds.node_x.values, ds.node_y.values])
        write_vtu(out / f"{name}.vtu", nodes, ds.face_nodes.values, fields)
        write_data(ds, out / f"{name}.nc", fmt)  # last: its presence marks the sample done

    names = [sample_name(t["split"], t["index"]) for t in todo]
    map_tasks(solve_sample, todo, names, write, executor, workers, log=log)


def read_sample(path: Path) -> Sample:
    ds = read_data(path)
    return Sample(
        name=path.stem, nodes=np.column_stack([ds.node_x.values, ds.node_y.values]),
        triangles=ds.face_nodes.values.astype(np.int64), fields={k: ds[k].values for k in FIELDS},
        inputs=np.array([float(ds[k]) for k in SCALAR_INPUTS]),
        outputs=np.array([float(ds[k]) for k in SCALAR_OUTPUTS]),
        shape_parameters=ds.shape_parameters.values, solve_seconds=float(ds.attrs.get("solve_seconds", np.nan)),
    )


def read_split(data: Path, split: str, n: int | None = None) -> list[Sample]:
    files = sorted(Path(data).glob(f"{split}_*.nc")) or sorted(Path(data).glob(f"{split}_*.zarr"))
    if n is not None:
        files = files[:n]
    return [read_sample(f) for f in files]

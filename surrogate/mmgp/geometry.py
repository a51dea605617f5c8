"""Specimens with random smooth sides, notches and optionally an elliptic hole, meshed with gmsh.

The generator's parameters (Fourier coefficients of the sides, notch positions) are kept with each
sample only for the oracle baseline; the surrogate itself sees nothing but the mesh.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from surrogate.mmgp.morphing import signed_areas

REPO_ROOT = Path(__file__).resolve().parents[2]
MAX_NOTCHES = 2
MAX_HOLES = 1
HOLE_KEYS = ("holes", "hole_radius", "hole_aspect", "hole_x", "hole_y", "hole_margin")


@dataclass(frozen=True)
class SpecimenFamily:
    """Ranges of one family of shapes, as in meshes/specimen2d.yaml."""

    width: float = 1.0
    height: float = 2.0
    modes: int = 8
    amplitude: float = 0.06
    decay: float = 1.5
    notches: tuple[int, int] = (0, 2)
    notch_depth: tuple[float, float] = (0.05, 0.18)
    notch_width: tuple[float, float] = (0.06, 0.15)
    notch_y: tuple[float, float] = (0.4, 1.6)
    min_width: float = 0.35
    boundary_points: int = 240
    mesh_size: tuple[float, float] = (0.021, 0.026)
    # an elliptic hole (a shape that is no longer a topological disk): count, mean semi-axis, minor / major
    # semi-axis, centre offset from the middle of the section at its height, centre height, and the
    # narrowest ligament left between the hole and a side
    holes: tuple[int, int] = (0, 0)
    hole_radius: tuple[float, float] = (0.08, 0.14)
    hole_aspect: tuple[float, float] = (0.6, 1.0)
    hole_x: tuple[float, float] = (-0.08, 0.08)
    hole_y: tuple[float, float] = (0.6, 1.4)
    hole_margin: float = 0.1
    ood: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file(cls, path: str | Path) -> "SpecimenFamily":
        path = resolve_path(path)
        raw = yaml.safe_load(path.read_text()) or {}
        raw.pop("family", None)
        allowed = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - allowed)
        if unknown:
            raise ValueError(f"{path}: unknown keys {unknown}; allowed: {', '.join(sorted(allowed))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})

    def out_of_range(self) -> "SpecimenFamily":
        """The family of out-of-distribution shapes (the `ood` block overrides these ranges)."""
        changes = {k: tuple(v) if isinstance(v, list) else v for k, v in self.ood.items()}
        return SpecimenFamily(**{**self.__dict__, **changes, "ood": {}})

    def with_mesh_size(self, mesh_size: tuple[float, float] | None) -> "SpecimenFamily":
        return self if mesh_size is None else SpecimenFamily(**{**self.__dict__, "mesh_size": tuple(mesh_size)})

    def settings(self) -> dict[str, Any]:
        """The family as plain settings; the hole settings only when it draws holes, so that the cache key
        of a family without holes is the one it had before holes existed."""
        out = dict(self.__dict__)
        if self.holes[1] == 0 and self.ood.get("holes", [0, 0])[1] == 0:
            for key in HOLE_KEYS:
                out.pop(key)
        return out


def resolve_path(path: str | Path) -> Path:
    """A reference file given relative to the working directory or to the repository."""
    path = Path(path)
    for candidate in (path, REPO_ROOT / path):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"geometry definition {str(path)!r} not found (looked in . and {REPO_ROOT})")


@dataclass(frozen=True)
class Specimen:
    """One drawn shape: its side offsets a_L(y), a_R(y) and the parameters that made it."""

    family: SpecimenFamily
    coefficients: np.ndarray  # (2, modes): left, right
    notches: np.ndarray  # (MAX_NOTCHES, 4): side (-1 left, +1 right, 0 none), depth, width, centre
    mesh_size: float
    holes: np.ndarray = field(default_factory=lambda: np.zeros((MAX_HOLES, 6)))
    # (MAX_HOLES, 6): present (1 or 0), centre x, centre y, semi-major, semi-minor axis, angle of the major axis

    def offsets(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self.family
        k = np.arange(1, self.coefficients.shape[1] + 1)
        basis = np.sin(np.pi * np.outer(y, k) / f.height)
        left, right = basis @ self.coefficients[0], basis @ self.coefficients[1]
        window = np.sin(np.pi * y / f.height)  # notches vanish exactly at the clamped and loaded edges
        for side, depth, width, centre in self.notches:
            if side == 0:
                continue
            dent = depth * window * np.exp(-(((y - centre) / width) ** 2))
            if side < 0:
                left = left + dent
            else:
                right = right + dent
        return left, right

    def boundary(self, points_per_side: int) -> tuple[np.ndarray, np.ndarray]:
        """Left and right side curves, bottom to top, shapes (points_per_side, 2)."""
        y = np.linspace(0.0, self.family.height, points_per_side)
        a_left, a_right = self.offsets(y)
        left = np.column_stack([a_left, y])
        right = np.column_stack([self.family.width - a_right, y])
        return left, right

    def hole_boundary(self, j: int, points: int) -> np.ndarray:
        """Points (points, 2) on the ellipse of hole j, counter-clockwise, the first not repeated."""
        _, cx, cy, a, b, angle = self.holes[j]
        t = 2 * np.pi * np.arange(points) / points
        x, y = a * np.cos(t), b * np.sin(t)
        c, s = np.cos(angle), np.sin(angle)
        return np.column_stack([cx + c * x - s * y, cy + s * x + c * y])

    def parameters(self) -> np.ndarray:
        """The generator's parameters as one vector (the oracle baseline's input)."""
        notch = self.notches.copy()
        # a notch on the left and the same on the right are different shapes: keep the side as a signed depth
        signed = np.column_stack([notch[:, 0] * notch[:, 1], notch[:, 2], notch[:, 3]])
        vector = [self.coefficients.ravel(), signed.ravel()]
        if self.family.holes[1] > 0:
            # the angle only matters as much as the ellipse is not a circle, and modulo pi
            _, cx, cy, a, b, angle = self.holes.T
            vector.append(np.column_stack([cx, cy, a, b, (a - b) * np.cos(2 * angle),
                                           (a - b) * np.sin(2 * angle)]).ravel())
        return np.concatenate(vector)


def draw_specimen(family: SpecimenFamily, rng: np.random.Generator, max_tries: int = 100) -> Specimen:
    """A random shape of the family; shapes narrower than `min_width` are drawn again."""
    k = np.arange(1, family.modes + 1)
    for _ in range(max_tries):
        coefficients = rng.normal(0.0, family.amplitude / k**family.decay, size=(2, family.modes))
        n = int(rng.integers(family.notches[0], family.notches[1] + 1))
        notches = np.zeros((MAX_NOTCHES, 4))
        for j in range(n):
            notches[j] = [rng.choice([-1.0, 1.0]), rng.uniform(*family.notch_depth),
                          rng.uniform(*family.notch_width), rng.uniform(*family.notch_y)]
        h = float(rng.uniform(*family.mesh_size))
        holes = np.zeros((MAX_HOLES, 6))
        shape = Specimen(family, coefficients, notches, h, holes)
        left, right = shape.boundary(400)
        if np.min(right[:, 0] - left[:, 0]) < family.min_width:
            continue
        # a family without holes draws nothing more, so its samples stay what they were before holes existed
        n_holes = int(rng.integers(family.holes[0], family.holes[1] + 1)) if family.holes[1] > 0 else 0
        for j in range(n_holes):
            radius, aspect = rng.uniform(*family.hole_radius), rng.uniform(*family.hole_aspect)
            cy = rng.uniform(*family.hole_y)
            a_left, a_right = shape.offsets(np.array([cy]))
            middle = 0.5 * (a_left[0] + family.width - a_right[0])
            major = 2 * radius / (1 + aspect)
            holes[j] = [1.0, middle + rng.uniform(*family.hole_x), cy, major, aspect * major, rng.uniform(0, np.pi)]
        if holes[:, 0].any() and _narrowest_ligament(shape) < family.hole_margin:
            continue
        return shape
    raise RuntimeError(f"no shape wider than min_width={family.min_width} in {max_tries} draws; lower the amplitudes")


def _narrowest_ligament(shape: Specimen) -> float:
    """The smallest horizontal distance between a hole and a side of the specimen."""
    gaps = []
    for j in np.flatnonzero(shape.holes[:, 0]):
        p = shape.hole_boundary(j, 200)
        a_left, a_right = shape.offsets(p[:, 1])
        gaps.append(min((p[:, 0] - a_left).min(), (shape.family.width - a_right - p[:, 0]).min()))
    return float(min(gaps)) if gaps else np.inf


def mesh_specimen(shape: Specimen) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate with gmsh: nodes (N, 2) and counter-clockwise triangles (M, 3).

    gmsh keeps global state and is not thread-safe: call this from one thread per process.
    """
    import gmsh

    n_side = max(8, shape.family.boundary_points // 4)
    left, right = shape.boundary(n_side)
    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("specimen")
        geo = gmsh.model.geo
        h = shape.mesh_size
        right_ids = [geo.addPoint(x, y, 0.0, h) for x, y in right]
        left_ids = [geo.addPoint(x, y, 0.0, h) for x, y in left]
        bottom = geo.addLine(left_ids[0], right_ids[0])
        right_side = geo.addSpline(right_ids)
        top = geo.addLine(right_ids[-1], left_ids[-1])
        left_side = geo.addSpline(left_ids[::-1])
        loop = geo.addCurveLoop([bottom, right_side, top, left_side])
        hole_loops, hole_curves = [], []
        for j in np.flatnonzero(shape.holes[:, 0]):
            ids = [geo.addPoint(x, y, 0.0, h) for x, y in shape.hole_boundary(j, n_side // 2)]
            hole_curves.append(geo.addSpline(ids + ids[:1]))
            hole_loops.append(geo.addCurveLoop(hole_curves[-1:]))
        surface = geo.addPlaneSurface([loop, *hole_loops])
        geo.synchronize()
        gmsh.model.addPhysicalGroup(1, [bottom], name="bottom")
        gmsh.model.addPhysicalGroup(1, [top], name="top")
        gmsh.model.addPhysicalGroup(1, [right_side, left_side], name="sides")
        if hole_curves:
            gmsh.model.addPhysicalGroup(1, hole_curves, name="holes")
        gmsh.model.addPhysicalGroup(2, [surface], name="specimen")
        gmsh.option.setNumber("Mesh.MeshSizeMax", h)
        gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
        gmsh.option.setNumber("Mesh.Algorithm", 6)  # Frontal-Delaunay: well-shaped triangles
        gmsh.model.mesh.generate(2)
        tags, coords, _ = gmsh.model.mesh.getNodes()
        types, _, elem_nodes = gmsh.model.mesh.getElements(2)
    finally:
        gmsh.finalize()
    tri_index = list(types).index(2)
    xyz = coords.reshape(-1, 3)
    index = np.full(int(tags.max()) + 1, -1)
    index[tags.astype(np.int64)] = np.arange(len(tags))
    triangles = index[elem_nodes[tri_index].astype(np.int64).reshape(-1, 3)]
    used = np.unique(triangles)  # drop geometry points that are not mesh vertices
    renumber = np.full(len(tags), -1)
    renumber[used] = np.arange(len(used))
    nodes = xyz[used, :2].copy()
    triangles = renumber[triangles]
    return nodes, orient_counter_clockwise(nodes, triangles)


def orient_counter_clockwise(nodes: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    flip = signed_areas(nodes, triangles) < 0
    triangles = triangles.copy()
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    return triangles

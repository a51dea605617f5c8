"""Mesh checks, morphing onto a common support, and P1 interpolation between meshes.

Two supports:
- the unit disk (Floater/Tutte). Floater's theorem: with positive barycentric weights and the boundary
  mapped onto a convex polygon in order, the map of a triangulated disk is a bijection, so the morphed
  mesh is valid (no inverted triangles). It needs one boundary loop: a mesh with a hole gets a clear error;
- a reference shape of the same topology (`rbf`, any number of holes): each boundary loop is carried onto
  the reference's matching loop by arc length, and the interior follows the thin-plate spline that
  interpolates the boundary displacements (RBF mesh morphing, as in de Boer, van der Schoot and Bijl 2007).
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import splu
from scipy.spatial import cKDTree

# numpy and scipy only: this file travels with the numpy export of a trained MMGP (`numpy_mmgp.py`)


def signed_areas(nodes: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    a, b, c = (nodes[triangles[:, i]] for i in range(3))
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))


class MeshError(ValueError):
    """A mesh this surrogate cannot take; the message says why and what is allowed."""


def check_mesh(nodes: np.ndarray, triangles: np.ndarray, what: str = "mesh") -> tuple[np.ndarray, np.ndarray]:
    """Planar nodes (N, 2) and counter-clockwise triangles (M, 3), or a MeshError naming the problem."""
    nodes = np.asarray(nodes, float)
    triangles = np.asarray(triangles)
    if nodes.ndim != 2 or nodes.shape[1] not in (2, 3):
        raise MeshError(f"{what}: expected nodes with shape (N, 2) or (N, 3), got {nodes.shape}")
    if nodes.shape[1] == 3:
        z = nodes[:, 2]
        span = np.ptp(nodes[:, :2], axis=0).max()
        if np.ptp(z) > 1e-9 * max(span, 1.0):
            raise MeshError(f"{what}: the mesh is 3D (z varies by {np.ptp(z):.3g}); this case is 2D: give a planar "
                            "triangle mesh (z = const)")
        nodes = nodes[:, :2]
    if triangles.ndim != 2 or triangles.shape[1] != 3 or len(triangles) == 0:
        raise MeshError(f"{what}: expected linear triangles with shape (M, 3), got {triangles.shape}")
    if triangles.min() < 0 or triangles.max() >= len(nodes):
        raise MeshError(f"{what}: triangle node indices outside 0..{len(nodes) - 1}")
    area = signed_areas(nodes, triangles)
    scale = np.abs(area).mean()
    degenerate = np.flatnonzero(np.abs(area) <= 1e-10 * scale)
    if len(degenerate):
        raise MeshError(f"{what}: {len(degenerate)} degenerate triangle(s) with zero area (first: #{degenerate[0]})")
    negative = area < 0
    if negative.all():  # consistently clockwise: only the orientation convention differs
        triangles = triangles[:, [0, 2, 1]]
    elif negative.any():
        raise MeshError(f"{what}: {int(negative.sum())} inverted triangle(s) (orientation opposite to the others; "
                        f"first: #{np.flatnonzero(negative)[0]})")
    return nodes, np.asarray(triangles, np.int64)


def mesh_edges(triangles: np.ndarray) -> np.ndarray:
    """Unique undirected edges (E, 2), smaller node first."""
    e = np.sort(np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]]), axis=1)
    n = int(triangles.max()) + 1
    key = np.unique(e[:, 0].astype(np.int64) * n + e[:, 1])  # 1D keys: much faster than unique(axis=0)
    return np.column_stack([key // n, key % n])


def boundary_loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Closed boundary node loops, each counter-clockwise for the outer boundary of a CCW mesh."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    n = int(triangles.max()) + 1
    key = np.sort(edges, axis=1) @ np.array([n, 1], dtype=np.int64)
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    boundary = edges[counts[inverse] == 1]
    following = dict(zip(boundary[:, 0].tolist(), boundary[:, 1].tolist()))
    if len(following) != len(boundary):
        raise MeshError("mesh: a boundary node is shared by two boundary loops (non-manifold boundary)")
    loops, seen = [], set()
    for start in following:
        if start in seen:
            continue
        loop, node = [], start
        while node not in seen:
            seen.add(node)
            loop.append(node)
            node = following[node]
        loops.append(np.array(loop))
    return loops


def _outer_loop(triangles: np.ndarray, loops: list[np.ndarray] | None = None) -> np.ndarray:
    loops = boundary_loops(triangles) if loops is None else loops
    if len(loops) != 1:
        raise MeshError(f"mesh: {len(loops)} boundary loops (the shape has {len(loops) - 1} hole(s)); disk morphing "
                        "needs a simply connected mesh with one boundary loop; train with morphing: rbf for shapes "
                        "with holes")
    return loops[0]


def corner_nodes(nodes: np.ndarray, loop: np.ndarray, count: int = 4) -> np.ndarray:
    """The `count` boundary nodes with the sharpest turns among those on the convex hull, in loop order,
    starting nearest the bottom-left (smallest x + y).

    Only hull nodes compete: the bottom of a deep notch can turn more sharply than a corner, but it
    never lies on the hull, while the corners of a specimen do.
    """
    from scipy.spatial import ConvexHull

    prev, nxt = nodes[np.roll(loop, 1)], nodes[np.roll(loop, -1)]
    a, b = nodes[loop] - prev, nxt - nodes[loop]
    turn = np.abs(np.arctan2(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0], (a * b).sum(1)))
    on_hull = ConvexHull(nodes[loop]).vertices
    if len(on_hull) >= count:
        turn[np.setdiff1d(np.arange(len(loop)), on_hull)] = -1.0
    picked = np.sort(np.argsort(turn)[-count:])
    first = np.argmin(nodes[loop[picked]].sum(1))
    return np.roll(picked, -first)


def _arc_length(points: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(points, axis=0), axis=1))])


def disk_boundary(nodes: np.ndarray, loop: np.ndarray, anchored: bool) -> tuple[np.ndarray, np.ndarray]:
    """Boundary nodes and their angles on the unit circle, increasing counter-clockwise.

    Not anchored (the authors' setting): start at the node of smallest x (then smallest y), walk the
    loop in the direction of decreasing y, angle proportional to arc length.
    Anchored: the four corners go to angles 5pi/4, 7pi/4, pi/4, 3pi/4 and arc length is spread
    between consecutive corners, so the same geometric feature lands at the same place on the disk.
    """
    if not anchored:
        p = nodes[loop]
        start = np.lexsort((p[:, 1], p[:, 0]))[0]
        # the loop is counter-clockwise, so from the leftmost node it heads toward smaller y
        order = np.roll(loop, -start)
        s = _arc_length(nodes[np.append(order, order[0])])
        return order, np.pi + 2 * np.pi * s[:-1] / s[-1]
    corners = corner_nodes(nodes, loop)
    order = np.roll(loop, -corners[0])
    corners = (corners - corners[0]) % len(loop)
    bounds = np.append(corners, len(loop))
    theta = np.empty(len(loop))
    for j in range(4):
        seg = order[bounds[j]: bounds[j + 1] + 1] if j < 3 else np.append(order[bounds[j]:], order[0])
        s = _arc_length(nodes[seg])
        theta[bounds[j]: bounds[j + 1]] = 1.25 * np.pi + 0.5 * np.pi * (j + s[:-1] / s[-1])
    return order, theta


def uniform_weights(nodes: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """w_ij = 1 for every edge (Tutte's and the authors' choice): the map follows the connectivity."""
    n = len(nodes)
    e = mesh_edges(triangles)
    return sp.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])),
                         shape=(n, n)).tocsr()


def mean_value_weights(nodes: np.ndarray, triangles: np.ndarray) -> sp.csr_matrix:
    """Floater's mean value weights w_ij = (tan(a/2) + tan(b/2)) / |x_j - x_i|, a and b the angles at i
    beside edge ij: positive on any valid mesh and reproducing linear functions, so the map follows the
    geometry rather than where the mesher put the nodes (a finer mesh near a notch no longer pulls it)."""
    rows, cols, vals = [], [], []
    for k in range(3):
        a, b, c = triangles[:, k], triangles[:, (k + 1) % 3], triangles[:, (k + 2) % 3]
        u, v = nodes[b] - nodes[a], nodes[c] - nodes[a]
        lu, lv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
        cross = np.abs(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0])
        half_tan = cross / (lu * lv + (u * v).sum(1))  # tan(angle / 2) = sin / (1 + cos)
        rows += [a, a]
        cols += [b, c]
        vals += [half_tan / lu, half_tan / lv]
    n = len(nodes)
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsr()


def floater_disk(nodes: np.ndarray, triangles: np.ndarray, anchored: bool = False,
                 weights: str = "uniform", loops: list[np.ndarray] | None = None) -> np.ndarray:
    """Positions (N, 2) of the nodes on the unit disk: boundary on the circle, every interior node at the
    weighted average of its neighbours (uniform weights 1/deg or mean value weights, one sparse solve).
    `loops`: the mesh's `boundary_loops`, if already known."""
    loop = _outer_loop(triangles, loops)
    order, theta = disk_boundary(nodes, loop, anchored)
    n = len(nodes)
    W = mean_value_weights(nodes, triangles) if weights == "mean_value" else uniform_weights(nodes, triangles)
    L = sp.diags(np.asarray(W.sum(1)).ravel()) - W
    out = np.zeros((n, 2))
    out[order] = np.column_stack([np.cos(theta), np.sin(theta)])
    interior = np.setdiff1d(np.arange(n), order)
    if len(interior):
        rhs = -L[interior][:, order] @ out[order]
        A = L[interior][:, interior].tocsc()
        # A is a nonsingular M-matrix (positive diagonal, non-positive off-diagonal, rows weakly diagonally
        # dominant and every node linked to the boundary), symmetric in pattern even for mean value weights:
        # elimination on the diagonal is stable without pivoting, and a symmetric ordering keeps the factors
        # sparse; together about three times faster than SuperLU's default column ordering with pivoting
        lu = splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
        out[interior] = lu.solve(np.asarray(rhs))
    return out


# the disk morphings by name: (corners pinned, interior weights)
DISK_MORPHINGS = {"floater": (False, "uniform"), "floater_anchored": (True, "uniform"),
                  "mean_value_anchored": (True, "mean_value")}
MORPHINGS = (*DISK_MORPHINGS, "rbf")


def morph(method: str, nodes: np.ndarray, triangles: np.ndarray, loops: list[np.ndarray] | None = None,
          reference: "ReferenceShape | None" = None) -> np.ndarray:
    """The nodes' positions on the common support: the unit disk, or the reference shape for `rbf`."""
    if method == "rbf":
        if reference is None:
            raise ValueError("rbf morphing needs the reference shape it maps onto")
        return reference.morph(nodes, triangles, loops)
    if method not in DISK_MORPHINGS:
        raise ValueError(f"unknown morphing {method!r}; allowed: {', '.join(MORPHINGS)}")
    anchored, weights = DISK_MORPHINGS[method]
    return floater_disk(nodes, triangles, anchored=anchored, weights=weights, loops=loops)


def _polygon_area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _at_fraction(points: np.ndarray, fraction: np.ndarray) -> np.ndarray:
    """Points at the given fractions of arc length along an open polyline."""
    s = _arc_length(points)
    s = s / s[-1]
    return np.column_stack([np.interp(fraction, s, points[:, 0]), np.interp(fraction, s, points[:, 1])])


def _closed_hole(nodes: np.ndarray, loop: np.ndarray) -> np.ndarray:
    """A hole's loop from its node on the ray from its centroid towards +x (a canonical start, the same
    place on every shape of one family), its first node repeated at the end."""
    d = nodes[loop] - nodes[loop].mean(0)
    loop = np.roll(loop, -int(np.argmin(np.abs(np.arctan2(d[:, 1], d[:, 0])))))
    return np.append(loop, loop[0])


class ReferenceShape:
    """The common support of `rbf` morphing: the reference mesh's boundary, its outer loop split at the four
    corners and its holes, each a polyline that a new mesh's matching loop is carried onto by arc length."""

    def __init__(self, nodes: np.ndarray, triangles: np.ndarray, steps: int = 4):
        self.steps = steps
        self.outer, self.holes = _outer_and_holes(nodes, boundary_loops(triangles))
        corners = corner_nodes(nodes, self.outer)
        self.segments = [nodes[_closed_segment(self.outer, corners, j)] for j in range(4)]
        self.hole_loops = [nodes[_closed_hole(nodes, loop)] for loop in self.holes]
        self.hole_centres = _centroids(nodes, self.holes)

    def boundary_targets(self, nodes: np.ndarray, loops: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """The boundary nodes of a mesh and where they go on the reference boundary."""
        outer, holes = _outer_and_holes(nodes, loops)
        if len(holes) != len(self.holes):
            raise MeshError(f"mesh: {len(holes)} hole(s), but the shapes this surrogate was trained on have "
                            f"{len(self.holes)}; rbf morphing maps each hole onto a hole of the reference shape")
        corners = corner_nodes(nodes, outer)
        pieces = [(_closed_segment(outer, corners, j), segment) for j, segment in enumerate(self.segments)]
        if holes:
            from scipy.optimize import linear_sum_assignment

            centres = _centroids(nodes, holes)
            _, match = linear_sum_assignment(np.linalg.norm(centres[:, None] - self.hole_centres[None], axis=-1))
            pieces += [(_closed_hole(nodes, loop), self.hole_loops[k]) for loop, k in zip(holes, match)]
        sources, targets = [], []
        for piece, onto in pieces:  # each piece's last node is the first of the next piece or of its own loop
            s = _arc_length(nodes[piece])
            sources.append(piece[:-1])
            targets.append(_at_fraction(onto, s[:-1] / s[-1]))
        return np.concatenate(sources), np.concatenate(targets)

    def morph(self, nodes: np.ndarray, triangles: np.ndarray, loops: list[np.ndarray] | None = None) -> np.ndarray:
        """Positions of all nodes on the reference shape: boundary nodes on the reference boundary, interior
        nodes moved by thin-plate splines (with their linear part) through the boundary displacements.

        The boundary moves in `steps` equal increments, each spline fitted at the current positions: a hole
        that sits higher than the reference's moves by up to a third of the specimen, and one spline for the
        whole way folds the triangles it squeezes (9 of 29 shapes in a trial), while the composition of
        small near-identity maps did not fold any. A shape that still folds (2 of the 500 training shapes of
        cases/mmgp.yaml, deep notches a quarter of the height below the reference's) is morphed again in 4x
        as many increments."""
        loops = boundary_loops(triangles) if loops is None else loops
        boundary, targets = self.boundary_targets(nodes, loops)
        for steps in (self.steps, 4 * self.steps):
            out = _spline_steps(nodes, boundary, targets, steps)
            folded = int((signed_areas(out, triangles) <= 0).sum())
            if not folded:
                return out
        raise MeshError(f"mesh: rbf morphing onto the reference shape folds {folded} triangle(s) even in {steps} "
                        "increments; the shape is too far from the shapes this surrogate was trained on")


def _spline_steps(nodes: np.ndarray, boundary: np.ndarray, targets: np.ndarray, steps: int) -> np.ndarray:
    """All nodes moved as the boundary nodes go to their targets in `steps` equal increments, the interior
    by the thin-plate spline (with its linear part) of each increment, fitted at the current positions."""
    from scipy.interpolate import RBFInterpolator

    out = nodes.copy()
    for k in range(1, steps + 1):
        goal = nodes[boundary] + (targets - nodes[boundary]) * (k / steps)
        spline = RBFInterpolator(out[boundary], goal - out[boundary], kernel="thin_plate_spline", degree=1)
        out = out + spline(out)
        out[boundary] = goal
    return out


def outer_perimeter(nodes: np.ndarray, triangles: np.ndarray) -> float:
    """The length of a mesh's outer boundary loop."""
    outer, _ = _outer_and_holes(nodes, boundary_loops(triangles))
    return float(_arc_length(nodes[np.append(outer, outer[0])])[-1])


def hole_centre(nodes: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """The mean of the centroids of a mesh's hole loops, (2,); NaN without holes."""
    _, holes = _outer_and_holes(nodes, boundary_loops(triangles))
    return _centroids(nodes, holes).mean(0) if holes else np.full(2, np.nan)


def _centroids(nodes: np.ndarray, loops: list[np.ndarray]) -> np.ndarray:
    """The mean node position of each loop, (len(loops), 2)."""
    return np.array([nodes[loop].mean(0) for loop in loops]).reshape(-1, 2)


def _outer_and_holes(nodes: np.ndarray, loops: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The outer boundary loop (largest enclosed area) and the others, the holes' loops."""
    areas = [abs(_polygon_area(nodes[loop])) for loop in loops]
    outer = int(np.argmax(areas))
    return loops[outer], [loop for k, loop in enumerate(loops) if k != outer]


def _closed_segment(loop: np.ndarray, corners: np.ndarray, j: int) -> np.ndarray:
    """Nodes of the outer loop from corner j to corner j + 1, both included."""
    rolled = np.roll(loop, -corners[j])
    length = (corners[(j + 1) % len(corners)] - corners[j]) % len(loop)
    return rolled[: length + 1]


def interpolation_matrix(nodes: np.ndarray, triangles: np.ndarray, points: np.ndarray) -> sp.csr_matrix:
    """Sparse P (len(points), len(nodes)) with P @ f = the P1 interpolant of nodal values f at `points`.
    Points outside the mesh are clamped to the nearest boundary edge."""
    return PointLocator(nodes, triangles).matrix(points)


class PointLocator:
    """Finds points in one triangle mesh: a k-d tree of the triangle centroids and the boundary edges,
    built once and reused for every set of points (the common mesh answers every new shape)."""

    def __init__(self, nodes: np.ndarray, triangles: np.ndarray, loops: list[np.ndarray] | None = None):
        self.nodes, self.triangles = nodes, triangles
        self.tree = cKDTree(nodes[triangles].mean(1))
        loops = boundary_loops(triangles) if loops is None else loops
        self.edges = np.concatenate([np.column_stack([loop, np.roll(loop, -1)]) for loop in loops])
        self._edge_tree = None

    def matrix(self, points: np.ndarray) -> sp.csr_matrix:
        """Sparse P (len(points), len(nodes)): P1 interpolation at `points`, those outside clamped to the
        nearest boundary edge."""
        nodes, triangles = self.nodes, self.triangles
        n_pts = len(points)
        rows, cols, vals = [], [], []
        found = np.zeros(n_pts, bool)
        for k in (8, 32, 128):
            todo = np.flatnonzero(~found)
            if k > 8:  # points outside the mesh would be searched in vain: they are clamped below
                todo = todo[self._inside(points[todo])]
            if len(todo) == 0:
                continue
            _, cand = self.tree.query(points[todo], k=min(k, len(triangles)))
            cand = cand.reshape(len(todo), -1)
            bary = _barycentric(nodes, triangles[cand], points[todo])  # (n, k, 3)
            inside = bary.min(-1) >= -1e-10
            has = inside.any(1)
            pick = inside.argmax(1)
            idx = todo[has]
            tri = triangles[cand[has, pick[has]]]
            lam = np.clip(bary[has, pick[has]], 0, None)
            lam /= lam.sum(1, keepdims=True)
            rows.append(np.repeat(idx, 3))
            cols.append(tri.ravel())
            vals.append(lam.ravel())
            found[idx] = True
        outside = np.flatnonzero(~found)
        if len(outside):
            r, c, v = self._clamp(points[outside])
            rows.append(outside[r])
            cols.append(c)
            vals.append(v)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(n_pts, len(nodes)))

    def _inside(self, points: np.ndarray) -> np.ndarray:
        """Even-odd crossing test against the boundary edges (all loops, so holes count as outside)."""
        a, b = self.nodes[self.edges[:, 0]], self.nodes[self.edges[:, 1]]
        x, y = points[:, :1], points[:, 1:2]
        straddles = (a[:, 1] > y) != (b[:, 1] > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = a[:, 0] + (y - a[:, 1]) * (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])
        return (straddles & (x < x_cross)).sum(1) % 2 == 1

    def _clamp(self, points: np.ndarray):
        a, b = self.nodes[self.edges[:, 0]], self.nodes[self.edges[:, 1]]
        if self._edge_tree is None:
            self._edge_tree = cKDTree(0.5 * (a + b))
        _, cand = self._edge_tree.query(points, k=min(16, len(self.edges)))
        cand = cand.reshape(len(points), -1)
        pa, ab = points[:, None, :] - a[cand], b[cand] - a[cand]
        t = np.clip((pa * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
        dist = np.linalg.norm(pa - t[..., None] * ab, axis=-1)
        best = dist.argmin(1)
        sel = np.arange(len(points))
        e, tt = cand[sel, best], t[sel, best]
        rows = np.repeat(sel, 2)
        cols = np.column_stack([self.edges[e, 0], self.edges[e, 1]]).ravel()
        vals = np.column_stack([1 - tt, tt]).ravel()
        return rows, cols, vals


def _barycentric(nodes: np.ndarray, tris: np.ndarray, points: np.ndarray) -> np.ndarray:
    a, b, c = nodes[tris[..., 0]], nodes[tris[..., 1]], nodes[tris[..., 2]]
    p = points[:, None, :]
    v0, v1, v2 = b - a, c - a, p - a
    det = v0[..., 0] * v1[..., 1] - v0[..., 1] * v1[..., 0]
    l1 = (v2[..., 0] * v1[..., 1] - v2[..., 1] * v1[..., 0]) / det
    l2 = (v0[..., 0] * v2[..., 1] - v0[..., 1] * v2[..., 0]) / det
    return np.stack([1 - l1 - l2, l1, l2], -1)

"""The FEM of the mmgp family: patch tests, convergence order, Newton, and real nonlinearity."""
import numpy as np
import pytest

pytest.importorskip("skfem")

from surrogate.mmgp.fem import Elasticity, lame_plane_strain, solve_specimen  # noqa: E402
from surrogate.mmgp.geometry import SpecimenFamily, draw_specimen, mesh_specimen  # noqa: E402

LAM, MU = lame_plane_strain(100.0, 0.3)


def unstructured_square(n: int = 6, seed: int = 0):
    """A unit-square triangulation with jittered interior nodes (no symmetry to hide errors)."""
    from scipy.spatial import Delaunay

    g = np.linspace(0, 1, n + 1)
    X, Y = np.meshgrid(g, g)
    p = np.column_stack([X.ravel(), Y.ravel()])
    inner = (p > 0).all(1) & (p < 1).all(1)
    p[inner] += np.random.default_rng(seed).uniform(-0.3, 0.3, (inner.sum(), 2)) / n
    return p, Delaunay(p).simplices


def boundary_dofs(problem: Elasticity):
    nodes = problem.facet_nodes(problem.mesh.boundary_facets())
    return nodes, problem.dofs[:, nodes]


@pytest.mark.parametrize("model", ["linear", "neo_hookean"])
def test_patch_test_reproduces_an_affine_displacement(model):
    p, t = unstructured_square()
    problem = Elasticity(p, t)
    A, b = np.array([[0.05, 0.02], [-0.03, 0.04]]), np.array([0.01, -0.02])
    exact = p @ A.T + b
    nodes, dofs = boundary_dofs(problem)
    values = np.concatenate([exact[nodes, 0], exact[nodes, 1]])
    zero = np.zeros(problem.basis.N)
    fixed = np.concatenate([dofs[0], dofs[1]])
    if model == "linear":
        u = problem.solve_linear(LAM, MU, zero, fixed, values)
    else:
        u, _ = problem.solve_neo_hookean(LAM, MU, zero, fixed, values, steps=1)
    assert np.abs(u - exact).max() < 1e-10


def test_linear_elasticity_converges_at_second_order_in_l2():
    sympy = pytest.importorskip("sympy")
    x, y = sympy.symbols("x y")
    u = [sympy.sin(sympy.pi * x) * sympy.sin(sympy.pi * y), x * y * (1 - x) * (1 - y)]
    v = (x, y)
    eps = [[(sympy.diff(u[i], v[j]) + sympy.diff(u[j], v[i])) / 2 for j in range(2)] for i in range(2)]
    tr = eps[0][0] + eps[1][1]
    sigma = [[LAM * tr * int(i == j) + 2 * MU * eps[i][j] for j in range(2)] for i in range(2)]
    f = [-(sympy.diff(sigma[i][0], x) + sympy.diff(sigma[i][1], y)) for i in range(2)]
    f_num = sympy.lambdify((x, y), f, "numpy")
    u_num = sympy.lambdify((x, y), u, "numpy")
    errors, sizes = [], []
    for n in (8, 16, 32):
        from skfem import MeshTri

        m = MeshTri.init_tensor(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
        problem = Elasticity(m.p.T, m.t.T)
        load = problem.body_load(lambda X, Y: np.broadcast_arrays(*f_num(X, Y)))
        nodes, dofs = boundary_dofs(problem)
        sol = problem.solve_linear(LAM, MU, load, np.concatenate([dofs[0], dofs[1]]))
        # L2 error by a fine quadrature of the P1 interpolant
        from skfem import Functional

        uh = problem.basis.interpolate(problem.to_dofs(sol))

        @Functional
        def err2(w):
            ex = u_num(w.x[0], w.x[1])
            return (w["uh"].value[0] - ex[0]) ** 2 + (w["uh"].value[1] - np.broadcast_to(ex[1], w.x[0].shape)) ** 2

        errors.append(np.sqrt(err2.assemble(problem.basis, uh=uh)))
        sizes.append(1.0 / n)
    rates = np.diff(np.log(errors)) / np.diff(np.log(sizes))
    assert np.all(rates > 1.85), rates


@pytest.fixture(scope="module")
def coarse_specimens():
    family = SpecimenFamily.from_file("meshes/specimen2d.yaml").with_mesh_size((0.08, 0.1))
    rng = np.random.default_rng(5)
    out = []
    for _ in range(5):
        shape = draw_specimen(family, rng)
        out.append((mesh_specimen(shape), rng.uniform(25, 35), rng.uniform(-2, 2), rng.uniform(80, 120)))
    return out


def test_newton_converges_quadratically(coarse_specimens):
    (nodes, tris), load, shear, young = coarse_specimens[0]
    sol = solve_specimen(nodes, tris, load, shear, young, 0.35, "neo_hookean", steps=4, tol=1e-12)
    orders = []
    for history in sol.newton.residuals:
        r = np.array(history)
        r = r[r > 1e-10]  # above round-off
        orders += list(np.log(r[2:] / r[1:-1]) / np.log(r[1:-1] / r[:-2]))
    # e_{k+1} ~ C e_k^2: the observed order approaches 2 (linear convergence would give 1)
    assert max(orders) > 1.8, (sol.newton.residuals, orders)


def test_hyperelastic_answer_differs_from_linear_by_at_least_ten_percent(coarse_specimens):
    diffs = []
    for (nodes, tris), load, shear, young in coarse_specimens:
        a = solve_specimen(nodes, tris, load, shear, young, 0.35, "neo_hookean")
        b = solve_specimen(nodes, tris, load, shear, young, 0.35, "linear")
        ma, mb = (np.linalg.norm(s.displacement, axis=1).max() for s in (a, b))
        diffs.append(abs(ma - mb) / mb)
    assert np.median(diffs) >= 0.10, diffs


def test_small_load_hyperelastic_matches_linear(coarse_specimens):
    (nodes, tris), _, _, young = coarse_specimens[1]
    a = solve_specimen(nodes, tris, 0.01, 0.001, young, 0.35, "neo_hookean", steps=1)
    b = solve_specimen(nodes, tris, 0.01, 0.001, young, 0.35, "linear")
    assert np.abs(a.displacement - b.displacement).max() < 1e-2 * np.abs(b.displacement).max()


def test_stress_percentile_is_that_of_the_nodal_field_and_steadier_over_meshes_than_the_triangles():
    import dataclasses

    from surrogate.mmgp.numpy_mmgp import field_percentile

    family = SpecimenFamily.from_file("meshes/specimen2d.yaml").with_mesh_size((0.05, 0.05))
    rng = np.random.default_rng(3)
    spreads = {"nodal": [], "triangles": []}
    for _ in range(2):
        shape = draw_specimen(family, rng)
        values = {"nodal": [], "triangles": []}
        for factor in (0.93, 1.0, 1.07):  # the same shape meshed three times
            nodes, tris = mesh_specimen(dataclasses.replace(shape, mesh_size=0.05 * factor))
            sol = solve_specimen(nodes, tris, 30.0, 1.0, 100.0, 0.35, "linear")
            problem = Elasticity(nodes, tris)
            areas = problem.element_areas()
            assert sol.scalars["von_mises_p995"] == field_percentile(sol.von_mises, tris, areas, 99.5)[0]
            lam, mu = lame_plane_strain(100.0, 0.35)
            constant = problem.von_mises(sol.displacement, lam, mu, "linear")  # per triangle
            values["nodal"].append(sol.scalars["von_mises_p995"])
            values["triangles"].append(_area_percentile(constant, areas))
        for k, v in values.items():
            spreads[k].append(np.std(v) / np.mean(v))
    assert np.mean(spreads["nodal"]) < 0.5 * np.mean(spreads["triangles"]), spreads


def _area_percentile(values: np.ndarray, areas: np.ndarray, q: float = 99.5) -> float:
    order = np.argsort(values)
    w = areas[order] / areas.sum()
    return float(np.interp(q / 100, np.cumsum(w) - 0.5 * w, values[order]))


def test_a_sample_newton_cannot_solve_in_its_load_steps_is_solved_in_smaller_ones(monkeypatch):
    import surrogate.mmgp.data as D
    from surrogate.mmgp.fem import NewtonDidNotConverge

    asked = []

    def solve(*args, steps, **kwargs):
        asked.append(steps)
        if steps < 16:
            raise NewtonDidNotConverge("too large a load step")
        return solve_specimen(*args, steps=steps, **kwargs)

    monkeypatch.setattr(D, "solve_specimen", solve)
    family = SpecimenFamily.from_file("meshes/specimen2d_hole.yaml").with_mesh_size((0.1, 0.1)).settings()
    physics = {"model": "linear", "load": [25.0, 35.0], "shear": [-2.0, 2.0], "young": [80.0, 120.0],
               "poisson": 0.35, "load_steps": 4, "newton_tol": 1e-10}
    ds = D.solve_sample({"split": "train", "index": 0, "seed": 0, "family": family, "physics": physics})
    assert asked == [4, 8, 16] and ds.attrs["load_steps"] == 16
    with pytest.raises(NewtonDidNotConverge):  # no further than 4x the case's steps
        D.solve_sample({"split": "train", "index": 0, "seed": 0, "family": family,
                        "physics": {**physics, "load_steps": 2}})

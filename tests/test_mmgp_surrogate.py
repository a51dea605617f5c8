"""Morphing, transfer, POD and GPs of the mmgp family, and the smoke case end to end."""
import numpy as np
import pytest
import torch

pytest.importorskip("gpytorch")

from surrogate.mmgp.geometry import SpecimenFamily, draw_specimen, mesh_specimen, signed_areas  # noqa: E402
from surrogate.mmgp.morphing import (  # noqa: E402
    MeshError,
    check_mesh,
    floater_disk,
    interpolation_matrix,
)
from surrogate.mmgp.pod import POD, mass_matrix  # noqa: E402


@pytest.fixture(scope="module")
def specimen():
    family = SpecimenFamily.from_file("meshes/specimen2d.yaml").with_mesh_size((0.06, 0.07))
    return mesh_specimen(draw_specimen(family, np.random.default_rng(3)))


def square_with_hole():
    from scipy.spatial import Delaunay

    g = np.linspace(0, 1, 9)
    p = np.array([(x, y) for x in g for y in g])
    t = Delaunay(p).simplices
    centre = p[t].mean(1)
    keep = ~((np.abs(centre - 0.5) < 0.2).all(1))
    return p, t[keep]


@pytest.mark.parametrize("anchored,weights", [(False, "uniform"), (True, "uniform"), (True, "mean_value")])
def test_floater_map_is_a_valid_disk_mesh(specimen, anchored, weights):
    nodes, tris = specimen
    disk = floater_disk(nodes, tris, anchored, weights)
    assert signed_areas(disk, tris).min() > 0  # no inverted triangle: a bijection
    assert np.linalg.norm(disk, axis=1).max() <= 1 + 1e-12
    if anchored:  # the bottom-left corner goes to angle 5 pi / 4
        corner = np.argmin(nodes.sum(1))
        assert np.allclose(disk[corner], [np.cos(1.25 * np.pi), np.sin(1.25 * np.pi)])


def test_corners_are_found_when_a_notch_turns_more_sharply_than_they_do():
    from surrogate.mmgp.morphing import corner_nodes

    # a 1 x 2 specimen, counter-clockwise, with a narrow V notch in its left side: the notch bottom
    # turns by about 150 degrees, each corner by 90
    left = [(0.0, 2.0), (0.0, 1.5), (0.0, 1.05), (0.3, 1.0), (0.0, 0.95), (0.0, 0.5)]
    points = np.array([(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (1.0, 2.0), (0.5, 2.0)] + left)
    loop = np.arange(len(points))
    assert sorted(map(tuple, points[loop[corner_nodes(points, loop)]])) == [(0, 0), (0, 2), (1, 0), (1, 2)]


def test_mean_value_weights_reproduce_linear_functions(specimen):
    from surrogate.mmgp.morphing import boundary_loops, mean_value_weights

    nodes, tris = specimen
    W = mean_value_weights(nodes, tris)
    assert W.data.min() > 0
    interior = np.setdiff1d(np.arange(len(nodes)), boundary_loops(tris)[0])
    residual = (np.asarray(W.sum(1)) * nodes - W @ nodes)[interior]  # each node the weighted mean of its neighbours
    assert np.abs(residual).max() < 1e-10 * np.abs(W @ nodes).max()


def test_percentile_by_area_of_a_nodal_field(specimen):
    from surrogate.mmgp.numpy_mmgp import field_percentile

    # on the unit square the field x has exactly q% of the area below q/100
    n = 40
    xs = np.linspace(0, 1, n + 1)
    square = np.column_stack([np.repeat(xs, n + 1), np.tile(xs, n + 1)])
    k = (np.arange(n)[:, None] * (n + 1) + np.arange(n)[None]).ravel()
    tris = np.concatenate([np.column_stack([k, k + n + 1, k + n + 2]), np.column_stack([k, k + n + 2, k + 1])])
    areas = np.abs(signed_areas(square, tris))
    for q in (50.0, 90.0, 99.5):
        assert abs(field_percentile(square[:, 0], tris, areas, q)[0] - q / 100) < 0.2 / n

    nodes, tris = specimen
    field = np.exp(2 * nodes[:, 0]) + nodes[:, 1] ** 2
    areas = np.abs(signed_areas(nodes, tris))
    level, weights = field_percentile(field, tris, areas, 99.5)
    assert np.isclose(weights.sum(), 1.0) and (weights >= 0).all()
    shifted, _ = field_percentile(field + 0.01, tris, areas, 99.5)  # a uniform shift moves it one for one
    assert np.isclose(shifted - level, weights @ np.full(len(nodes), 0.01))
    scaled, _ = field_percentile(1.02 * field, tris, areas, 99.5)  # first order in a small relative change
    assert abs(scaled - level - weights @ (0.02 * field)) < 1e-3 * level


def test_leading_modes_get_their_own_kernels_and_later_ones_share():
    from surrogate.mmgp.model import MMGP

    m = MMGP(kernel="per_leading_mode", own_kernel_modes=3, tail_group=4)
    groups = m._field_groups(np.arange(10, 20))
    assert [g.tolist() for g in groups] == [[10], [11], [12], [13, 14, 15, 16], [17, 18, 19]]
    assert len(MMGP(kernel="shared_per_field")._field_groups(np.arange(5))) == 1


def test_interpolation_is_exact_for_linear_fields_and_clamps_outside(specimen):
    nodes, tris = specimen
    rng = np.random.default_rng(0)
    inside = nodes[tris[:50]].mean(1)
    P = interpolation_matrix(nodes, tris, inside)
    f = 2 * nodes[:, 0] - 3 * nodes[:, 1] + 1
    assert np.allclose(P @ f, 2 * inside[:, 0] - 3 * inside[:, 1] + 1)
    outside = np.array([[-0.5, 1.0], [3.0, 1.0]]) + rng.normal(0, 0.01, (2, 2))
    Q = interpolation_matrix(nodes, tris, outside)
    assert np.allclose(Q.sum(1), 1) and (Q.data >= 0).all()


def test_point_locator_answers_any_points_and_treats_holes_as_outside():
    from surrogate.mmgp.morphing import PointLocator

    nodes, tris = square_with_hole()
    locator = PointLocator(nodes, tris)
    f = 2 * nodes[:, 0] - 3 * nodes[:, 1] + 1
    centroids = nodes[tris].mean(1)
    for points in (centroids, centroids[::-3]):  # the same search structures answer every set of points
        assert np.allclose(locator.matrix(points) @ f, 2 * points[:, 0] - 3 * points[:, 1] + 1)
    P = locator.matrix(np.array([[0.5, 0.5], [0.45, 0.52]]))  # in the hole: clamped onto its boundary
    assert np.allclose(P.sum(1), 1) and P.nnz <= 4 and (P.data >= 0).all()
    assert np.allclose(P.toarray(), interpolation_matrix(nodes, tris, np.array([[0.5, 0.5], [0.45, 0.52]])).toarray())


@pytest.mark.parametrize("transform", ["sqrt", "log"])
def test_transformed_fields_decode_to_the_moments_of_the_transformed_gaussian(transform):
    import scipy.sparse as sp

    from surrogate.mmgp.numpy_mmgp import decode_field, transform_field

    rng = np.random.default_rng(5)
    values, offset = rng.uniform(0.5, 2.0, 30), 0.1
    modes = 0.3 * rng.normal(size=(2, 30))
    coef, var = np.array([0.3, -0.2]), np.array([0.25, 0.09])
    mean = transform_field(values, transform, offset) - coef @ modes  # the regressed field's mean is exact
    Q = sp.identity(30, format="csr")
    m, _, v = decode_field(Q, mean, modes, coef, var, transform=transform, offset=offset)
    draws = mean + (coef + rng.normal(size=(200_000, 2)) * np.sqrt(var)) @ modes
    back = draws**2 if transform == "sqrt" else np.exp(draws) - offset
    assert np.allclose(m, back.mean(0), rtol=2e-3) and np.allclose(v, back.var(0), rtol=3e-2)
    m0, jacobian, v0 = decode_field(Q, mean, modes, coef, 0 * var, transform=transform, offset=offset)
    assert np.allclose(m0, values) and np.allclose(v0, 0)  # no uncertainty: the output itself
    m1, _, _ = decode_field(Q, mean, modes, coef + [1e-6, 0], 0 * var, transform=transform, offset=offset)
    assert np.allclose((m1 - m0) / 1e-6, jacobian[:, 0], rtol=1e-4)


def test_batched_posterior_matches_a_direct_solve_per_group():
    from surrogate.mmgp.gp import GPPredictor
    from surrogate.mmgp.numpy_mmgp import matern52

    rng = np.random.default_rng(4)
    x, xt, Y = rng.normal(size=(40, 3)), rng.normal(size=(5, 3)), rng.normal(size=(40, 6))
    groups = [np.array([0]), np.array([1, 2, 3]), np.array([4, 5])]
    hyper = {"lengthscale": torch.tensor(rng.uniform(0.5, 2, (3, 1, 3))),
             "outputscale": torch.tensor(rng.uniform(0.5, 2, 3)), "noise": torch.tensor([1e-3, 1e-2, 1e-4])}
    mean, var = GPPredictor(x, Y, groups, hyper).predict(xt)
    for g, cols in enumerate(groups):
        ls, scale, noise = hyper["lengthscale"][g, 0].numpy(), float(hyper["outputscale"][g]), float(hyper["noise"][g])
        K = matern52(x, x, ls, scale) + (noise + 1e-10) * np.eye(len(x))
        Ks = matern52(xt, x, ls, scale)
        assert np.allclose(mean[:, cols], Ks @ np.linalg.solve(K, Y[:, cols]))
        latent = scale - np.einsum("ij,ji->i", Ks, np.linalg.solve(K, Ks.T))
        assert np.allclose(var[:, cols], (latent + noise)[:, None])


@pytest.fixture(scope="module")
def holed():
    family = SpecimenFamily.from_file("meshes/specimen2d_hole.yaml").with_mesh_size((0.05, 0.06))
    shapes = [draw_specimen(family, np.random.default_rng(i)) for i in range(5)]
    return shapes, [mesh_specimen(shape) for shape in shapes]


def test_hole_family_draws_one_hole_with_room_around_it(holed):
    from surrogate.mmgp.geometry import _narrowest_ligament
    from surrogate.mmgp.morphing import boundary_loops

    shapes, meshes = holed
    for shape, (_, tris) in zip(shapes, meshes):
        assert len(boundary_loops(tris)) == 2
        assert _narrowest_ligament(shape) >= shape.family.hole_margin
        assert len(shape.parameters()) == 2 * shape.family.modes + 6 + 6  # sides, notches, the hole
    # a family without holes keeps the settings, and so the cached data, it had before holes existed
    assert "holes" not in SpecimenFamily.from_file("meshes/specimen2d.yaml").settings()


def _distance_to_polylines(points, polylines):
    a = np.concatenate([p[:-1] for p in polylines])
    b = np.concatenate([p[1:] for p in polylines])
    ab, ap = b - a, points[:, None] - a[None]
    t = np.clip((ap * ab).sum(-1) / (ab * ab).sum(-1), 0, 1)
    return np.linalg.norm(ap - t[..., None] * ab, axis=-1).min(1)


def test_rbf_morphing_carries_each_boundary_loop_onto_the_reference_without_folding(holed, specimen):
    from surrogate.mmgp.morphing import ReferenceShape, boundary_loops, corner_nodes

    _, meshes = holed
    ref_nodes, ref_tris = meshes[0]
    ref = ReferenceShape(ref_nodes, ref_tris)
    assert np.allclose(ref.morph(ref_nodes, ref_tris), ref_nodes, atol=1e-12)  # the reference onto itself
    ref_corners = ref_nodes[boundary_loops(ref_tris)[0][corner_nodes(ref_nodes, boundary_loops(ref_tris)[0])]]
    for nodes, tris in meshes[1:]:
        out = ref.morph(nodes, tris)
        assert signed_areas(out, tris).min() > 0
        loops = boundary_loops(tris)
        boundary = np.concatenate(loops)
        assert _distance_to_polylines(out[boundary], [*ref.segments, *ref.hole_loops]).max() < 1e-9
        outer = max(loops, key=len)
        assert np.allclose(np.sort(out[outer[corner_nodes(nodes, outer)]], 0), np.sort(ref_corners, 0))
    # a scaled and shifted copy has the same arc-length fractions, and the splines' linear part undoes it exactly
    assert np.allclose(ref.morph(1.1 * ref_nodes + [0.3, -0.2], ref_tris), ref_nodes, atol=1e-9)
    with pytest.raises(MeshError, match="0 hole"):
        ref.morph(*specimen)


def test_reference_shape_is_the_shortest_bounded_of_the_shapes_with_holes_nearest_the_median(holed, specimen):
    from surrogate.mmgp.data import Sample
    from surrogate.mmgp.model import MMGP
    from surrogate.mmgp.morphing import hole_centre, outer_perimeter

    def samples(meshes):
        return [Sample(f"s{i}", n, t, {}, np.zeros(3), np.zeros(3), np.zeros(1), 0.0)
                for i, (n, t) in enumerate(meshes)]

    _, meshes = holed
    with_holes = samples(meshes * 4)            # 20 shapes: the tenth nearest the median hole are two
    centres = np.array([hole_centre(n, t) for n, t in meshes])
    nearest = np.argsort(np.linalg.norm(centres - np.median(centres, 0), axis=1))[0]
    assert MMGP(morphing="rbf")._common_sample(with_holes).name == f"s{nearest}"
    # without holes, the shortest outer boundary of all; the disk morphings take the middle sample
    nodes, tris = specimen
    plain = samples([specimen, (nodes * [1.0, 1.2], tris), (nodes * 0.9, tris)])
    perimeters = [outer_perimeter(s.nodes, s.triangles) for s in plain]
    assert MMGP(morphing="rbf")._common_sample(plain).name == f"s{int(np.argmin(perimeters))}" == "s2"
    assert MMGP(morphing="mean_value_anchored")._common_sample(plain).name == "s1"


def test_bad_meshes_get_clear_errors(specimen):
    nodes, tris = specimen
    with pytest.raises(MeshError, match="hole"):
        floater_disk(*square_with_hole())
    with pytest.raises(MeshError, match="3D"):
        check_mesh(np.column_stack([nodes, nodes[:, 0]]), tris)
    bad = tris.copy()
    bad[0] = bad[0, [0, 2, 1]]
    with pytest.raises(MeshError, match="inverted"):
        check_mesh(nodes, bad)
    flat = tris.copy()
    flat[0] = [flat[0, 0], flat[0, 0], flat[0, 1]]
    with pytest.raises(MeshError, match="degenerate"):
        check_mesh(nodes, flat)


def test_pod_modes_are_orthonormal_in_the_mass_inner_product(specimen):
    nodes, tris = specimen
    M = mass_matrix(nodes, tris)
    assert np.isclose(M.sum(), np.abs(signed_areas(nodes, tris)).sum())
    rng = np.random.default_rng(1)
    snaps = np.array([np.sin(a * nodes[:, 0]) + b * nodes[:, 1] for a, b in rng.uniform(0.5, 2, (12, 2))])
    pod = POD(3, center=True).fit(snaps, M)
    gram = pod.modes_ @ (M @ pod.modes_.T)
    assert np.allclose(gram, np.eye(3), atol=1e-8)
    full = POD(12, center=True).fit(snaps, M)
    assert np.allclose(full.inverse_transform(full.transform(snaps)), snaps, atol=1e-8)
    assert POD(12, energy=0.99, center=True).fit(snaps, M).n_modes_ < 12


def test_training_kernel_matches_gpytorch_and_its_gradient_is_exact():
    from scipy.optimize import approx_fprime

    from surrogate.mmgp.gp import _kernel, _Objective, matern52

    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 3))
    k = _kernel((1,), 3)
    ls = torch.tensor([[[0.7, 1.3, 2.0]]], dtype=torch.float64)
    k.base_kernel.lengthscale = ls
    k.outputscale = torch.tensor([1.0], dtype=torch.float64)
    ours, _ = matern52(torch.as_tensor(x) / ls[0], torch.as_tensor(x) / ls[0])
    assert torch.allclose(k(torch.as_tensor(x)).to_dense()[0], ours, atol=1e-10)
    obj = _Objective(x, rng.normal(size=(30, 3)), [np.array([0, 1]), np.array([2])], 2, 1e-8)
    theta = obj.initial(rng)
    value, grad = obj(theta)
    numeric = approx_fprime(theta, lambda t: obj(t)[0], 1e-7)
    assert np.allclose(grad, numeric, rtol=1e-3, atol=1e-5)


def test_gp_learns_a_smooth_function_with_calibrated_intervals():
    from surrogate.mmgp.gp import GPPredictor, fit_gps

    rng = np.random.default_rng(2)
    f = lambda x: np.column_stack([np.sin(2 * x[:, 0]) + 0.3 * x[:, 1], np.cos(x[:, 0] * x[:, 1])])  # noqa: E731
    x, xt = rng.uniform(-1.5, 1.5, (80, 2)), rng.uniform(-1.5, 1.5, (200, 2))
    y = f(x)
    mu, sd = y.mean(0), y.std(0)
    groups = [np.array([0]), np.array([1])]
    hyper = fit_gps(x, (y - mu) / sd, groups, restarts=3, max_iter=200)
    mean, var = GPPredictor(x, (y - mu) / sd, groups, hyper).predict(xt)
    err = np.abs(mean * sd + mu - f(xt))
    assert np.sqrt((err**2).mean(0)).max() < 0.02 * sd.min()
    assert 0.85 <= np.mean(err <= 1.96 * np.sqrt(var) * sd) <= 1.0


def test_a_group_ignores_the_inputs_it_does_not_read():
    from surrogate.mmgp.gp import UNUSED, GPPredictor, fit_gps

    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, (40, 3))
    y = np.column_stack([np.sin(2 * x[:, 0]) + x[:, 2], np.sin(2 * x[:, 1])])
    groups, active = [np.array([0]), np.array([1])], np.array([[True, False, True], [True, True, True]])
    hyper = fit_gps(x, y, groups, restarts=2, max_iter=100, active=active)
    assert np.isclose(float(hyper["lengthscale"][0, 0, 1]), UNUSED, rtol=1e-12)
    assert float(hyper["lengthscale"][1, 0, 1]) < 10  # the other group reads it and learns its scale
    probe = rng.uniform(-1, 1, (5, 3))
    moved = probe.copy()
    moved[:, 1] = rng.uniform(-1, 1, 5)
    gp = GPPredictor(x, y, groups, hyper)
    (m0, v0), (m1, v1) = gp.predict(probe), gp.predict(moved)
    # equal up to rounding, which the nearly noise-free GP's weights amplify to about 1e-8
    assert np.allclose(m0[:, 0], m1[:, 0], rtol=0, atol=1e-6) and np.allclose(v0[:, 0], v1[:, 0], rtol=0, atol=1e-6)
    assert np.abs(m0[:, 1] - m1[:, 1]).max() > 0.1
    with pytest.raises(ValueError, match="at least one input per group"):
        fit_gps(x, y, groups, active=np.array([[False] * 3, [True] * 3]))


def test_each_output_reads_its_own_number_of_shape_modes():
    from surrogate.mmgp.model import MMGP

    model = MMGP(shape_modes=2, shape_modes_per_output={"von_mises": 4, "compliance": 9})
    model.field_pods_ = {f: type("Pod", (), {"n_modes_": n})() for f, n in (("u1", 1), ("u2", 1), ("von_mises", 2))}
    model.groups_ = [np.array([0]), np.array([1]), np.array([2, 3]), np.array([4]), np.array([5]), np.array([6])]
    active = model._active_inputs(n_shape=5, n_inputs=7)  # 5 shape coefficients, then 2 scalar inputs
    default = [True] * 2 + [False] * 3 + [True] * 2
    assert active.tolist() == [default, default, [True] * 4 + [False] + [True] * 2, default, default, [True] * 7]


def test_leave_one_out_variance_factor_matches_refitting_without_each_point():
    from surrogate.mmgp.gp import GPPredictor, fit_gps

    rng = np.random.default_rng(4)
    x = rng.uniform(-1, 1, (25, 2))
    y = np.column_stack([np.sin(3 * x[:, 0]) + x[:, 1], x[:, 0] * x[:, 1]])
    y = (y - y.mean(0)) / y.std(0)
    groups = [np.array([0, 1])]
    hyper = fit_gps(x, y, groups, restarts=1, max_iter=50)
    factor = float(GPPredictor(x, y, groups, hyper).loo_variance_factor()[0])
    ratios = []
    for i in range(len(x)):
        keep = np.arange(len(x)) != i
        mean, var = GPPredictor(x[keep], y[keep], groups, hyper).predict(x[i:i + 1])
        ratios.append((y[i] - mean[0]) ** 2 / var[0])
    assert np.isclose(factor, np.mean(ratios), rtol=1e-6)


def test_cross_validated_factor_predicts_the_error_on_new_points():
    from surrogate.mmgp.gp import GPPredictor, fit_gps
    from surrogate.mmgp.model import MMGP

    rng = np.random.default_rng(5)
    f = lambda x: np.column_stack([np.sin(2 * x[:, 0]) + x[:, 1], x[:, 0] * x[:, 1], np.cos(x.sum(1))])  # noqa: E731
    x, xt = rng.uniform(-1.5, 1.5, (60, 2)), rng.uniform(-1.5, 1.5, (400, 2))
    noisy = lambda x: f(x) + 0.03 * rng.standard_normal((len(x), 3))  # noqa: E731
    y, yt = noisy(x), noisy(xt)
    mu, sd = y.mean(0), y.std(0)
    y, yt = (y - mu) / sd, (yt - mu) / sd
    model = MMGP(restarts=2, max_iter=100, noise_floor=1e-8)
    model.groups_ = [np.array([j]) for j in range(3)]  # three scalar outputs, the last groups of a model
    model.active_inputs_ = np.ones((3, 2), dtype=bool)
    factors = model._cross_validated_factors(x, y, folds=5, seed=0)
    assert sorted(factors) == [0, 1, 2]
    hyper = fit_gps(x, y, model.groups_, restarts=2, max_iter=100)
    mean, var = GPPredictor(x, y, model.groups_, hyper).predict(xt)
    on_new_points = ((yt - mean) ** 2 / var).mean(0)
    for g, factor in factors.items():  # within the scatter of a 60-point estimate
        assert 0.5 < factor / on_new_points[g] < 2.0, (g, factor, on_new_points[g])


def test_percentile_spread_makes_standardised_errors_unit_mean_square():
    from surrogate.mmgp.model import _unit_mean_square_spread

    rng = np.random.default_rng(5)
    values = rng.uniform(1, 2, 200)
    errors2 = (0.03 * values * rng.normal(size=200)) ** 2
    variances = np.full(200, 1e-6)
    s = _unit_mean_square_spread(errors2, variances, values**2)
    assert np.isclose(np.mean(errors2 / (variances + s**2 * values**2)), 1.0)
    assert 0.02 < s < 0.04
    assert _unit_mean_square_spread(errors2, 10 * errors2, values**2) == 0.0  # already covered


def test_smoke_case_runs_saves_loads_and_predicts_on_a_user_mesh(mmgp_smoke_run, tmp_path):
    import meshio
    import xarray as xr

    import surrogate
    from surrogate.core.case import CaseError, load_case
    from surrogate.core.store import RunFolder
    from surrogate.mmgp.meshes import write_prediction
    from surrogate.mmgp.model import MMGP, NotFitted

    run = RunFolder(mmgp_smoke_run)
    metrics = run.metrics()
    methods = {r["method"] for r in metrics["rows"]}
    assert {"mmgp_improved", "mmgp_faithful", "oracle_gp", "gnn"} <= methods
    assert np.isfinite(metrics["headline"]["value"])
    assert list((run.path / "figures").glob("von_mises_*.png"))

    model = surrogate.load(run.path)
    sample = sorted((run.path / "data").glob("ood_*.nc"))[0]  # the out-of-range shape: one deep notch
    from surrogate.mmgp.data import read_sample

    s = read_sample(sample)
    mesh_file = tmp_path / "user.vtu"
    points = np.column_stack([s.nodes, np.zeros(len(s.nodes))])
    meshio.write(mesh_file, meshio.Mesh(points, [("triangle", s.triangles)]))
    with pytest.warns(UserWarning, match="far outside"):
        ds = model.predict(str(mesh_file), {"load": 30.0, "shear": 0.5, "young": 100.0})
    assert isinstance(ds, xr.Dataset)
    assert ds.u2.shape == (len(s.nodes),) and (ds.u2_std >= 0).all() and float(ds.compliance_std) > 0
    again = MMGP.load(run.path / "model", "mmgp_improved")  # save/load round trip: the same numbers
    with pytest.warns(UserWarning, match="far outside"):
        a = model.predict_arrays(s.nodes, s.triangles, s.inputs)
        b = again.predict_arrays(s.nodes, s.triangles, s.inputs)
    assert np.array_equal(a["fields"]["von_mises"][0], b["fields"]["von_mises"][0])

    out = tmp_path / "out.vtu"
    write_prediction(ds, out)
    assert "u2_std" in meshio.read(out).point_data
    before = out.read_bytes()
    with pytest.raises(FileExistsError):
        write_prediction(ds, out)
    assert out.read_bytes() == before

    bad = tmp_path / "broken.vtu"
    bad.write_text("not a mesh")
    with pytest.raises(MeshError, match="meshio cannot read"):
        model.predict(str(bad), [30.0, 0.5, 100.0])
    from surrogate.mmgp.meshes import predict_file

    target = tmp_path / "never.vtu"
    with pytest.raises(MeshError):
        predict_file(run.path, bad, target, {"load": 30.0, "shear": 0.5, "young": 100.0})
    assert not target.exists()  # nothing written for bad input
    with pytest.warns(UserWarning):
        predict_file(run.path, mesh_file, target, {"load": 30.0, "shear": 0.5, "young": 100.0})
    assert "von_mises_std" in meshio.read(target).point_data
    with pytest.raises(KeyError, match="young"):
        model.predict((s.nodes, s.triangles), {"load": 30.0, "shear": 0.5})

    # the same through the command line: bad input is exit code 2 with nothing written
    from surrogate.cli import main

    cli_out = tmp_path / "cli.vtu"
    base = ["predict", str(run.path), "--mesh", str(mesh_file), "-o", str(cli_out)]
    with pytest.warns(UserWarning):
        assert main([*base, "-s", "load=30", "-s", "shear=0.5", "-s", "young=100"]) == 0
    assert "u1_std" in meshio.read(cli_out).point_data
    assert main([*base, "-s", "load=30", "-s", "shear=0.5", "-s", "young=100"]) == 2  # exists
    assert main([*base, "--overwrite", "-s", "load=30"]) == 2  # scalars missing
    assert main(["predict", str(run.path), "--mesh", str(bad), "-o",
                 str(tmp_path / "x.vtu"), "-s", "load=3"]) == 2
    assert not (tmp_path / "x.vtu").exists()
    with pytest.raises(NotFitted, match="fit"):
        MMGP(**again.settings).predict_arrays(s.nodes, s.triangles, s.inputs)
    with pytest.raises(CaseError, match="surrogate.restarts"):
        load_case("cases/mmgp.yaml", "smoke", ["surrogate.restarts=0"])
    with pytest.raises(CaseError, match="allowed here"):
        load_case("cases/mmgp.yaml", "smoke", ["physics.viscosity=1"])


def test_hole_case_morphs_by_rbf_and_predicts_with_numpy_alone(mmgp_hole_smoke_run, mmgp_smoke_run):
    import surrogate
    from surrogate.mmgp.data import read_split
    from surrogate.mmgp.numpy_mmgp import NumpyMMGP

    rows = surrogate.core.store.RunFolder(mmgp_hole_smoke_run).metrics()["rows"]
    errors = {r["method"]: r["value"] for r in rows if r["metric"] == "rrmse_mean"}
    assert set(errors) == {"mmgp_improved", "mmgp_authors_settings_rbf", "oracle_gp", "gnn"}
    assert np.isfinite(list(errors.values())).all()
    model = surrogate.load(mmgp_hole_smoke_run)
    s = read_split(mmgp_hole_smoke_run / "data", "test", 1)[0]
    want = model.predict_arrays(s.nodes, s.triangles, s.inputs)
    got = NumpyMMGP(model.to_arrays()).predict(s.nodes, s.triangles, s.inputs)  # numpy GP posterior, rbf morphing
    for name, (mean, std) in want["fields"].items():
        assert np.allclose(got["fields"][name][0], mean, rtol=1e-8, atol=1e-10 * np.abs(mean).max())
        assert np.allclose(got["fields"][name][1], std, rtol=1e-8, atol=1e-10 * np.abs(std).max())
    # each model refuses the other topology, saying why
    disk_shape = read_split(mmgp_smoke_run / "data", "test", 1)[0]
    with pytest.raises(MeshError, match="0 hole"):
        model.predict_arrays(disk_shape.nodes, disk_shape.triangles, disk_shape.inputs)
    with pytest.raises(MeshError, match="hole"):
        surrogate.load(mmgp_smoke_run).predict_arrays(s.nodes, s.triangles, s.inputs)


def test_plaid_metrics_normalise_each_sample_by_its_own_size_and_peak():
    from surrogate.core import metrics as M

    refs = [np.array([1.0, -2.0]), np.array([10.0, 0.0, 0.0, 0.0])]
    preds = [np.array([1.0, -1.0]), np.array([10.0, 0.0, 0.0, 2.0])]
    # sample 1: 1^2 / (2 * 2^2) = 1/8; sample 2: 2^2 / (4 * 10^2) = 1/100
    assert np.isclose(M.rrmse_field(refs, preds), np.sqrt((1 / 8 + 1 / 100) / 2))
    assert np.isclose(M.rrmse_scalar([2.0, 4.0], [1.0, 5.0]), np.sqrt((0.25 + 0.0625) / 2))
    assert M.q2([np.array([1.0, 2.0, 3.0])], [np.array([1.0, 2.0, 3.0])]) == 1.0
    assert M.coverage([np.zeros(100)], [np.full(100, 1.0)], [np.ones(100)], 0.95) == 1.0
    assert M.coverage([np.zeros(100)], [np.full(100, 2.0)], [np.ones(100)], 0.95) == 0.0


def test_the_case_file_names_the_outputs_the_model_has():
    from typing import get_args

    from surrogate.mmgp.data import FIELDS
    from surrogate.mmgp.fem import SCALAR_OUTPUTS
    from surrogate.mmgp.schema import Output

    assert list(get_args(Output)) == [*FIELDS, *SCALAR_OUTPUTS]

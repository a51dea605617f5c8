"""The PIG model: closed-form derivatives against autograd, exact periodicity, the loss and its guards."""
import math

import pytest
import torch

from surrogate.core.training import NonFiniteLoss
from surrogate.pinn.pdes import make_problem
from surrogate.pinn.pig import PIG, autograd_derivatives
from surrogate.pinn.schema import PhaseSpec, TrainSpec
from surrogate.pinn.training import PINNLoss, relocate_gaussians, sample_points, train_pig


def _pig(dim, covariance="diagonal", periodic=None, hidden=(16,)):
    # wide Gaussians and O(1) weights so that every term of the derivatives matters
    return PIG([-1.0] * dim, [2.0] * dim, 20, channels=3, hidden=hidden, sigma_init=0.4, weight_std=1.0,
               input_range=(0.0, 2.0), periodic=periodic, covariance=covariance, seed=3)


@pytest.mark.parametrize("dim,covariance,periodic,hidden", [
    (2, "diagonal", None, (16,)), (3, "diagonal", None, (8, 8)), (2, "diagonal", [True, False], (16,)),
    (2, "full", None, (16,)), (3, "full", None, (16,)), (1, "diagonal", None, (4,))])
def test_closed_form_derivatives_equal_autograd(dim, covariance, periodic, hidden):
    model = _pig(dim, covariance, periodic, hidden)
    if covariance == "full":  # leave the identity rotation, so the rotation enters
        with torch.no_grad():
            model.rotation.add_(0.3 * torch.randn(model.rotation.shape, generator=torch.Generator().manual_seed(0)))
    x = -1 + 3 * torch.rand(64, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    u, du, d2u = model.derivatives(x, 2)
    ua, dua, d2ua = autograd_derivatives(model, x, 2)
    assert torch.allclose(u, ua, rtol=0, atol=1e-13)
    assert torch.allclose(du, dua, rtol=1e-10, atol=1e-12 * float(dua.detach().abs().max()))
    assert torch.allclose(d2u, d2ua, rtol=1e-10, atol=1e-12 * float(d2ua.detach().abs().max()))
    assert float(d2u.detach().abs().max()) > 1e-3
    # parameter gradients through the closed form match those through double backpropagation
    g1 = torch.autograd.grad(d2u.sum(), [model.mu, model.sigma])
    g2 = torch.autograd.grad(d2ua.sum(), [model.mu, model.sigma])
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-11 * float(b.abs().max()))


@pytest.mark.parametrize("periodic", [None, [True, False]])
def test_local_evaluation_matches_dense_and_its_own_autograd(periodic):
    dense = PIG([-1.0, 0.0], [1.0, 1.0], 30, sigma_init=0.05, weight_std=1.0, periodic=periodic, seed=4)
    local = PIG([-1.0, 0.0], [1.0, 1.0], 30, sigma_init=0.05, weight_std=1.0, periodic=periodic, seed=4,
                local_cutoff=6.0)
    local.load_state_dict(dense.state_dict())
    x = torch.rand(300, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * torch.tensor([2.0, 1.0])
    x[:, 0] -= 1
    for a, b in zip(dense.derivatives(x), local.derivatives(x)):
        a, b = a.detach(), b.detach()
        assert float((a - b).abs().max()) <= 1e-6 * float(a.abs().max())  # exp(-18) of each weight, summed
    for a, b in zip(local.derivatives(x), autograd_derivatives(local, x)):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12 * float(b.detach().abs().max()))


def test_sigma_min_floors_every_scale_and_keeps_the_derivatives_exact():
    floored = PIG([-1.0, 0.0], [1.0, 1.0], 30, sigma_init=0.05, weight_std=1.0, seed=4, sigma_min=0.03)
    with torch.no_grad():
        floored.sigma[0, 0, 1] = 1e-6  # a needle, as training once made one
    scales = floored.inverse_variance().detach().rsqrt()
    assert float(scales.min()) >= 0.03 and float(scales[0, 0, 1]) == pytest.approx(0.03, rel=1e-6)
    assert float(scales[1, 1, 0]) == pytest.approx(math.hypot(0.05, 0.03))
    x = torch.rand(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    x[0] = (floored.mu[0, 0] - floored.shift) / floored.scale  # a point on the needle's mean
    x = x.detach()
    bare = PIG([-1.0, 0.0], [1.0, 1.0], 30, sigma_init=0.05, weight_std=1.0, seed=4)
    bare.load_state_dict(floored.state_dict())
    assert float(bare.derivatives(x[:1], 2)[2].detach().abs().max()) > 1e9  # without the floor the needle shows
    for local in (None, 6.0):
        model = PIG([-1.0, 0.0], [1.0, 1.0], 30, sigma_init=0.05, weight_std=1.0, seed=4, sigma_min=0.03,
                    local_cutoff=local)
        model.load_state_dict(floored.state_dict())
        u, du, d2u = model.derivatives(x, 2)
        ua, dua, d2ua = autograd_derivatives(model, x, 2)
        assert torch.allclose(d2u, d2ua, rtol=1e-10, atol=1e-12 * float(d2ua.detach().abs().max()))
        assert float(d2u.detach().abs().max()) < 1e4  # with it, |w| / sigma_min^2 bounds the curvature
    with pytest.raises(ValueError, match="sigma_min must be positive"):
        PIG([0.0], [1.0], 5, sigma_min=0.0)


@pytest.mark.parametrize("dim,second,local", [(2, (0,), False), (2, (1,), True), (3, (0, 2), False)])
def test_only_the_asked_second_derivatives_are_computed_and_they_are_exact(dim, second, local):
    # Burgers and Allen-Cahn read u_xx only; the skipped columns are NaN so a residual that used them would show
    model = PIG([-1.0] * dim, [1.0] * dim, 20, sigma_init=0.4, weight_std=1.0, seed=5,
                local_cutoff=6.0 if local else None)
    x = -1 + 2 * torch.rand(50, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    _, _, full = autograd_derivatives(model, x, 2)
    for _, _, d2u in (model.derivatives(x, 2, second), autograd_derivatives(model, x, 2, second)):
        skipped = [d for d in range(dim) if d not in second]
        assert torch.isnan(d2u[:, skipped]).all()
        assert torch.allclose(d2u[:, list(second)], full[:, list(second)], rtol=1e-10, atol=1e-12)
        (g,) = torch.autograd.grad(d2u[:, list(second)].sum(), [model.mu])  # no NaN leaks into the gradient
        assert torch.isfinite(g).all()


def test_one_initial_scale_per_coordinate():
    model = PIG([-1.0, 0.0], [1.0, 1.0], 5, sigma_init=[0.05, 0.2], seed=0)
    assert torch.equal(model.sigma[..., 0], torch.full((4, 5), 0.05, dtype=torch.float64))
    assert torch.equal(model.sigma[..., 1], torch.full((4, 5), 0.2, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma_init needs one value or 2"):
        PIG([-1.0, 0.0], [1.0, 1.0], 5, sigma_init=[0.1, 0.1, 0.1])


def test_periodic_coordinate_is_exactly_periodic_with_its_derivatives():
    model = _pig(2, periodic=[True, False])
    x = -1 + 3 * torch.rand(32, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    shifted = x.clone()
    shifted[:, 0] += 3.0  # the period is the domain length 2 - (-1)
    for a, b in zip(model.derivatives(x), model.derivatives(shifted)):
        assert torch.allclose(a, b, atol=1e-12)


def test_constructor_and_shape_errors_name_the_problem():
    with pytest.raises(ValueError, match="n_gaussians and channels must be >= 1"):
        PIG([0.0], [1.0], 0)
    with pytest.raises(ValueError, match=r"expected x with shape \(P, 2\), got \(5, 3\)"):
        _pig(2)(torch.zeros(5, 3, dtype=torch.float64))
    model = _pig(2)
    assert torch.allclose(model.centres() * model.scale + model.shift, model.mu)


def _train_spec(**changes):
    base = dict(n_collocation=128, n_initial=32, n_boundary=64, steps_per_epoch=5, chunk_points=50,
                phases=[PhaseSpec(optimizer="adam", steps=30, lr=1e-2)])
    base.update(changes)
    return TrainSpec(**base)


def test_chunked_loss_gradient_equals_the_whole_batch_gradient():
    problem = make_problem("burgers")
    model = PIG(problem.lower, problem.upper, 10, seed=0)
    pts = sample_points(problem, _train_spec(), 0, torch.float64)
    grads = []
    for chunk in (50, 10_000):
        model.zero_grad()
        PINNLoss(model, problem, _train_spec(chunk_points=chunk), "closed_form").backward(pts)
        grads.append(torch.cat([p.grad.ravel() for p in model.parameters()]))
    assert torch.allclose(grads[0], grads[1], rtol=1e-10, atol=1e-14)


def test_adaptive_points_follow_the_residual_and_depend_only_on_seed_and_model():
    problem = make_problem("burgers")
    bump = lambda x: torch.exp(-((x[:, 0] - 0.3) / 0.02) ** 2)  # noqa: E731  a residual that lives near x = 0.3
    near = lambda pts: float(((pts["interior"][:, 0] - 0.3).abs() < 0.05).double().mean())  # noqa: E731
    spec = lambda **a: _train_spec(n_collocation=2000, causal_chunks=4, adaptive=a or None,  # noqa: E731
                                   phases=[PhaseSpec(optimizer="adam", steps=10, resample_every=5)])
    uniform = sample_points(problem, spec(), 4, torch.float64)
    adaptive = spec(pool=8, power=1.0, offset=0.0)
    chosen = sample_points(problem, adaptive, 4, torch.float64, bump)
    mixed = sample_points(problem, spec(pool=8, offset=1.0), 4, torch.float64, bump)
    # the strip |x - 0.3| < 0.05 holds 5% of the uniform points and all of the residual; the pool of 8 x 2000
    # points has about 800 in it, so the residual alone takes nearly all of them (40% of the set), and the
    # offset 1 (as much weight spread uniformly as on the residual) about half as many
    assert near(uniform) < 0.07 and near(chosen) > 0.37 and 0.15 < near(mixed) < 0.33
    again = sample_points(problem, adaptive, 4, torch.float64, bump)
    assert all(torch.equal(chosen[k], again[k]) for k in chosen)
    assert torch.equal(chosen["interior"], chosen["interior"][torch.argsort(chosen["interior"][:, -1])])  # causal order
    assert torch.equal(chosen["initial"], uniform["initial"])  # initial and boundary points stay uniform


def test_relocation_moves_the_weakest_gaussians_to_the_residual_and_keeps_the_field():
    problem = make_problem("burgers")
    model = PIG(problem.lower, problem.upper, 20, seed=0, sigma_init=[0.05, 0.2])
    with torch.no_grad():
        model.weight[:, :3] = 1e-9  # the three weakest of every channel
    x = problem.sample_interior(300, torch.Generator().manual_seed(1))
    before = model(x)
    bump = lambda x: torch.exp(-((x[:, 0] - 0.3) / 0.02) ** 2)  # noqa: E731  a residual near x = 0.3
    relocate_gaussians(model, problem, _train_spec(n_collocation=500, relocate={"share": 0.15, "pool": 4}), bump, 7)
    assert torch.allclose(model(x), before, rtol=0, atol=1e-8)  # moved with weight 0: only 1e-9 terms lost
    moved = model.centres()[:, :3]
    assert ((moved[..., 0] - 0.3).abs() < 0.1).all()
    assert torch.equal(model.weight[:, :3], torch.zeros(4, 3))
    assert torch.allclose(model.sigma[:, :3], torch.tensor([0.05, 0.2], dtype=torch.float64).expand(4, 3, 2))
    assert torch.equal(model.centres()[:, 3:], PIG(problem.lower, problem.upper, 20, seed=0).centres()[:, 3:])


@pytest.mark.parametrize("option", [{"adaptive": {"pool": 4}}, {"relocate": {"every": 1, "share": 0.2}}])
def test_points_or_gaussians_placed_by_the_residual_resume_to_the_same_model(tmp_path, monkeypatch, option):
    from surrogate.core.training import Trainer
    from surrogate.pinn import training

    problem = make_problem("burgers")
    train = _train_spec(n_collocation=64, causal_chunks=4, **option,
                        phases=[PhaseSpec(optimizer="adam", steps=15, resample_every=5)])
    moves = []
    relocate = training.relocate_gaussians
    monkeypatch.setattr(training, "relocate_gaussians", lambda *a: moves.append(a[-1]) or relocate(*a))
    straight = PIG(problem.lower, problem.upper, 6, seed=0)
    train_pig(straight, problem, train, "closed_form", 0, tmp_path / "a", lambda m: 0.0, log=lambda s: None)
    assert len(moves) == (2 if "relocate" in option else 0)  # at the second and third set of points

    save = Trainer._save

    def save_then_stop(self, epoch):
        save(self, epoch)
        if epoch == 1:
            raise KeyboardInterrupt  # killed after the second checkpoint
    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_pig(PIG(problem.lower, problem.upper, 6, seed=0), problem, train, "closed_form", 0, tmp_path / "b",
                  lambda m: 0.0, log=lambda s: None)
    monkeypatch.setattr(Trainer, "_save", save)
    resumed = PIG(problem.lower, problem.upper, 6, seed=1)
    train_pig(resumed, problem, train, "closed_form", 0, tmp_path / "b", lambda m: 0.0, log=lambda s: None)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_a_phase_ends_at_its_share_of_the_budget_and_the_next_trains_on_its_own_fixed_points(tmp_path, monkeypatch):
    from surrogate.pinn import training

    clock = iter(range(10**6))  # one second per reading of the clock
    monkeypatch.setattr(training, "training_clock", lambda: float(next(clock)))
    drawn = []

    def spy(problem, train, seed, dtype, residual=None):
        drawn.append((train.n_collocation, residual is not None))
        return sample_points(problem, train, seed, dtype, residual)
    monkeypatch.setattr(training, "sample_points", spy)
    problem = make_problem("burgers")
    train = _train_spec(n_collocation=64, adaptive={"pool": 4}, time_limit_s=40,
                        phases=[PhaseSpec(optimizer="adam", steps=10**4, resample_every=5, until=0.5),
                                PhaseSpec(optimizer="adam", steps=10**4, resample_every=0, n_collocation=96)])
    curve = train_pig(PIG(problem.lower, problem.upper, 6, seed=0), problem, train, "closed_form", 0,
                      tmp_path, lambda m: 0.0, log=lambda s: None)
    phases, seconds = curve["phase"], curve["seconds"]
    end_of_first = seconds[phases.index(1) - 1]
    assert 20 <= end_of_first < 30 and 40 <= seconds[-1] < 50  # each ends within one epoch past its limit
    # the first phase draws fresh points from the residual, the second one uniform set of its own size
    assert set(drawn[:-1]) == {(64, True)} and drawn[-1] == (96, False)


@pytest.mark.parametrize("changes,message", [
    ({"time_limit_s": None}, "phases.0.until = 0.5 is a share of time_limit_s, which is not set"),
    ({"until": 0.4}, "phases.1.until = 0.4 must be larger than phases.0.until = 0.5"),
])
def test_phase_shares_need_a_budget_and_must_grow(changes, message):
    spec = {"time_limit_s": 60, "until": 0.9, **changes}
    with pytest.raises(ValueError, match=message):
        _train_spec(time_limit_s=spec["time_limit_s"],
                    phases=[PhaseSpec(optimizer="adam", steps=5, until=0.5),
                            PhaseSpec(optimizer="lbfgs", steps=5, until=spec["until"])])


def test_a_float32_phase_hands_its_parameters_to_the_float64_model_and_resumes_exactly(tmp_path, monkeypatch):
    from surrogate.core.store import load_weights
    from surrogate.core.training import Trainer

    problem = make_problem("allen_cahn")
    train = _train_spec(n_collocation=64, causal_chunks=4,
                        phases=[PhaseSpec(optimizer="adam", steps=10, dtype="float32"),
                                PhaseSpec(optimizer="lbfgs", steps=10, max_iter=3)])
    new = lambda: PIG(problem.lower, problem.upper, 6, periodic=[True, False], seed=0)  # noqa: E731
    straight = new()
    curve = train_pig(straight, problem, train, "closed_form", 0, tmp_path / "a", lambda m: 0.0, log=lambda s: None)
    assert set(curve["phase"]) == {0, 1}
    assert load_weights(tmp_path / "a" / "phase0.pt")["model"]["mu"].dtype == torch.float32
    assert all(p.dtype == torch.float64 for p in straight.parameters())
    # the input scaling and the periodic frequencies stay the float64 ones, not float32 round trips
    assert all(torch.equal(a, b) for a, b in zip(straight.buffers(), new().buffers()))

    save, saves = Trainer._save, []

    def save_then_stop(self, epoch):
        save(self, epoch)
        saves.append(epoch)
        if len(saves) == 3:
            raise KeyboardInterrupt  # killed after the first checkpoint of the float64 phase
    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_pig(new(), problem, train, "closed_form", 0, tmp_path / "b", lambda m: 0.0, log=lambda s: None)
    monkeypatch.setattr(Trainer, "_save", save)
    resumed = new()
    train_pig(resumed, problem, train, "closed_form", 0, tmp_path / "b", lambda m: 0.0, log=lambda s: None)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))


def test_causal_weights_start_at_one_and_never_increase():
    problem = make_problem("allen_cahn")
    model = PIG(problem.lower, problem.upper, 10, periodic=[True, False], seed=0)
    train = _train_spec(causal_chunks=8, causal_eps=10.0)
    loss = PINNLoss(model, problem, train, "autograd")
    loss.backward(sample_points(problem, train, 0, torch.float64), need_grad=False)
    w = loss.causal_weights
    assert float(w[0]) == 1.0 and bool(torch.all(w[1:] <= w[:-1])) and float(w[-1]) < 1.0


def test_lbfgs_holds_the_causal_weights_within_a_step(tmp_path, monkeypatch):
    # reweighting at every closure call would give the line search a moving objective, which stalled
    # L-BFGS on Allen-Cahn and Burgers; the weights are updated between steps only
    problem = make_problem("allen_cahn")
    model = PIG(problem.lower, problem.upper, 10, periodic=[True, False], seed=0)
    train = _train_spec(causal_chunks=4, phases=[PhaseSpec(optimizer="lbfgs", steps=2, max_iter=6)])
    calls = {"weights": 0, "closure": 0}
    weights, backward = PINNLoss.point_weights, PINNLoss.backward

    def counted_weights(self, x):
        calls["weights"] += 1
        return weights(self, x)

    def counted_backward(self, pts, need_grad=True, point_weights=None):
        calls["closure"] += 1
        assert point_weights is not None
        return backward(self, pts, need_grad, point_weights)

    monkeypatch.setattr(PINNLoss, "point_weights", counted_weights)
    monkeypatch.setattr(PINNLoss, "backward", counted_backward)
    train_pig(model, problem, train, "closed_form", 0, tmp_path, lambda m: 0.0, log=lambda s: None)
    assert calls["weights"] == 2 and calls["closure"] > 4


def test_single_pass_causal_loss_equals_the_two_pass_one():
    problem = make_problem("allen_cahn")
    model = PIG(problem.lower, problem.upper, 10, periodic=[True, False], seed=0, weight_std=1.0)
    train = _train_spec(causal_chunks=8, causal_eps=5.0, chunk_points=10_000)  # one chunk: the single pass
    pts = sample_points(problem, train, 0, torch.float64)
    loss = PINNLoss(model, problem, train, "closed_form")
    one = loss.backward(pts)
    g1 = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    two = loss.backward(pts, point_weights=loss.point_weights(pts["interior"]))
    assert one["total"] == pytest.approx(two["total"], rel=1e-12)
    assert all(torch.allclose(a, p.grad, rtol=1e-10, atol=1e-15) for a, p in zip(g1, model.parameters()))


def test_a_spent_budget_ends_the_phase_without_a_checkpoint_per_remaining_epoch(tmp_path, monkeypatch):
    # phases are sized by steps far beyond the budget; the remaining epochs used to write a checkpoint each
    import surrogate.core.training as core_training

    saves = []
    save = core_training.save_weights
    monkeypatch.setattr(core_training, "save_weights", lambda path, state: (saves.append(path), save(path, state)))
    problem = make_problem("helmholtz")
    model = PIG(problem.lower, problem.upper, 5, seed=0)
    train = _train_spec(time_limit_s=1e-6, steps_per_epoch=1, phases=[PhaseSpec(optimizer="adam", steps=5000),
                                                                     PhaseSpec(optimizer="lbfgs", steps=5000)])
    curve = train_pig(model, problem, train, "closed_form", 0, tmp_path, lambda m: 0.0, log=lambda s: None)
    assert len(saves) == 1 and curve["step"] == [1] and curve["done"] == [0, 1]


def test_training_lowers_the_loss_and_the_error(tmp_path):
    problem = make_problem("helmholtz")
    model = PIG(problem.lower, problem.upper, 20, seed=0)
    x = problem.sample_interior(200, torch.Generator().manual_seed(5))
    ref = problem.exact(x)
    monitor = lambda m: float(torch.linalg.norm(m(x).detach() - ref) / torch.linalg.norm(ref))  # noqa: E731
    train = _train_spec(weights={"residual": 1e-4, "initial": 1.0, "boundary": 1.0},
                        phases=[PhaseSpec(optimizer="adam", steps=20, lr=1e-2),
                                PhaseSpec(optimizer="lbfgs", steps=2, max_iter=5)])
    curve = train_pig(model, problem, train, "closed_form", 0, tmp_path, monitor, log=lambda s: None)
    adam = [loss for loss, phase in zip(curve["loss"], curve["phase"]) if phase == 0]  # same points throughout
    assert adam[-1] < 0.9 * adam[0]
    assert curve["error"][-1] < curve["error"][0]
    assert curve["done"] == [0, 1] and curve["step"][-1] == 22
    # a second call on the same checkpoints resumes the finished training: no new steps, same model
    again = PIG(problem.lower, problem.upper, 20, seed=1)
    resumed = train_pig(again, problem, train, "closed_form", 0, tmp_path, monitor, log=lambda s: None)
    assert resumed["step"] == curve["step"]
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("needle", [False, True])
def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, monkeypatch, needle):
    problem = make_problem("helmholtz")
    model = PIG(problem.lower, problem.upper, 5, seed=0)
    if needle:
        with torch.no_grad():
            model.sigma[0, 0] = 1e-4
    calls = {"n": 0}
    honest = type(problem).residual

    def poisoned(self, x, u, du, d2u):
        calls["n"] += 1
        r = honest(self, x, u, du, d2u)
        return r * math.nan if calls["n"] > 7 else r

    monkeypatch.setattr(type(problem), "residual", poisoned)
    with pytest.raises(NonFiniteLoss, match="loss became nan") as err:
        # Adam moves a scale by at most lr per step, so 5 steps at 1e-5 leave the needle below 2e-4
        train_pig(model, problem, _train_spec(chunk_points=10_000, phases=[PhaseSpec(optimizer="adam", steps=30,
                                                                                     lr=1e-5)]),
                  "closed_form", 0, tmp_path, lambda m: 0.0, log=lambda s: None)
    assert (tmp_path / "phase0.pt").exists()  # epoch 1 (5 good steps) was kept
    # the message points at the floor on the scales when the kept model holds a needle, and only then
    assert ("scale of 0.0001" in str(err.value) and "surrogate.sigma_min" in str(err.value)) == needle


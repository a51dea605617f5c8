"""Every registered Lorenz96 method: builds, fits on tiny data, keeps shapes, survives save/load."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate.core.store import tensor_state
from surrogate.lorenz96.closures import METHODS, build
from surrogate.lorenz96.hybrid import HybridModel, load_state
from surrogate.lorenz96.schema import SHORTHANDS, TrainSpec
from surrogate.lorenz96.training import train_offline, train_rollout

SMALL = {"mno": {"modes": 8, "width": 8, "layers": 2}, "pure_fno": {"modes": 8, "width": 8, "layers": 2},
         "mno_memory": {"modes": 8, "width": 8, "layers": 2, "memory": 3},
         "local_mlp": {"hidden": [8]}, "polynomial": {"degree": 4, "ar1": True}}


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(0)
    X = rng.normal(3.0, 5.0, size=(3, 40, 8))
    U = -0.3 * X + 0.01 * X**2 + 0.1 * rng.standard_normal(X.shape)
    return X, U


@pytest.mark.parametrize("kind", METHODS.names())
def test_method_fits_predicts_and_round_trips(kind, tiny_data, tmp_path):
    X, U = tiny_data
    torch.manual_seed(0)
    memory = SMALL.get(kind, {}).get("memory", 0)  # a closure with memory runs in the Euler model
    model = HybridModel(build(kind, SMALL.get(kind, {})), F=20.0, dt=0.005, scheme="euler" if memory else "rk4")
    cfg = TrainSpec(epochs=2, batch_size=32, rollout_steps=3, rollout_epochs=1, rollout_windows=16)
    train_offline(model, X, U, cfg, tmp_path / "off.pt", 0, torch.device("cpu"), kind)
    train_rollout(model, X, cfg, tmp_path / "roll.pt", 0, torch.device("cpu"), kind)
    x = X[0, 5:10]
    hist = np.stack([X[0, t - memory : t] for t in range(5, 10)]) if memory else None  # (5, memory, 8)
    if model.role == "closure":
        out = model.closure(x, hist)
        assert isinstance(out, np.ndarray) and out.shape == x.shape and np.isfinite(out).all()
        t = torch.as_tensor(x)
        assert isinstance(model.closure(t, None if hist is None else torch.as_tensor(hist)), torch.Tensor)
    else:
        with pytest.raises(TypeError, match="emulator"):
            model.closure(x)
    traj = model.rollout(x, 4, seed=3, history=hist)
    assert traj.shape == (5, 5, 8)
    model.save(tmp_path, "m")
    again = HybridModel.load(tmp_path, "m")
    np.testing.assert_array_equal(again.rollout(x, 4, seed=3, history=hist), traj)


def test_polynomial_recovers_known_coefficients():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 5, size=(2, 500, 8))
    U = 0.3 + 1.2 * X - 0.01 * X**2 - 0.002 * X**3
    model = build("polynomial", {"degree": 3})
    model.fit_closed_form(X, U)
    np.testing.assert_allclose(model.coef.numpy(), [0.3, 1.2, -0.01, -0.002], rtol=1e-8, atol=1e-10)


def test_ar1_noise_statistics_are_fitted():
    rng = np.random.default_rng(2)
    phi, sigma = 0.9, 1.5
    e = np.zeros((4, 5000, 8))
    for t in range(1, 5000):
        e[:, t] = phi * e[:, t - 1] + sigma * np.sqrt(1 - phi**2) * rng.standard_normal((4, 8))
    X = rng.normal(0, 5, size=e.shape)
    model = build("polynomial", {"degree": 1, "ar1": True})
    model.fit_closed_form(X, 2.0 * X + e)
    assert abs(float(model.phi) - phi) < 0.02 and abs(float(model.sigma) - sigma) < 0.05


def test_mno_is_shift_equivariant_and_runs_at_any_ring_size():
    torch.manual_seed(0)
    model = HybridModel(build("mno", SMALL["mno"]), 20.0, 0.005, "rk4")
    x = np.random.default_rng(3).normal(size=(2, 8))
    np.testing.assert_allclose(model.closure(np.roll(x, 3, -1)), np.roll(model.closure(x), 3, -1), atol=1e-5)
    assert model.closure(np.tile(x, 8)).shape == (2, 64)


@pytest.mark.parametrize("m", [2, 8])
def test_mno_keeps_physical_wavenumbers_on_a_longer_ring(m):
    """A ring of m*K sites holding m copies of a K-site state is the same physical state; the closure
    trained at K must return m copies of its answer there (exact for the remapped spectral weights)."""
    torch.manual_seed(0)
    model = HybridModel(build("mno", {**SMALL["mno"], "ring_size": 8}), 20.0, 0.005, "rk4")
    x = np.random.default_rng(4).normal(3.0, 5.0, size=(3, 8))
    np.testing.assert_allclose(model.closure(np.tile(x, m)), np.tile(model.closure(x), m), atol=1e-4)
    plain = HybridModel(build("mno", SMALL["mno"]), 20.0, 0.005, "rk4")  # modes indexed by position
    load_state(plain.method, tensor_state(model.method))
    assert np.abs(plain.closure(np.tile(x, m)) - np.tile(plain.closure(x), m)).max() > 1e-2


def test_every_shorthand_builds():
    for name, spec in SHORTHANDS.items():
        kwargs = {k: v for k, v in spec.items() if k not in ("kind", "name")}
        assert build(spec["kind"], kwargs) is not None, name


def test_mno_forward_regression_value():
    """Seeded initial weights of neuraloperator 2.0.0's FNO on a fixed input; committed numbers."""
    torch.manual_seed(0)
    method = build("mno", {"modes": 8, "width": 8, "layers": 2})
    x = torch.linspace(-5, 10, 8, dtype=torch.float64)[None]
    out = method(x)[0, :3].detach().numpy()
    np.testing.assert_allclose(out, MNO_REGRESSION, rtol=1e-5, atol=1e-6)


MNO_REGRESSION = [-0.18132063746452332, -0.1322949081659317, -0.12403670698404312]

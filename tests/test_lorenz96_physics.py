"""The two-scale Lorenz96 solver against exact properties and a committed reference value."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from surrogate.lorenz96.physics import CoarseModel, TwoScaleLorenz96, l96_tendency, random_initial_state, rk4_step


def one_scale_run(X, F, dt, steps):
    for _ in range(steps):
        X = rk4_step(lambda x: l96_tendency(x, F), X, dt)
    return X


@pytest.mark.parametrize("periodicity", ["ring", "sector"])
def test_uncoupled_slow_variables_follow_one_scale_lorenz96_exactly(periodicity):
    rng = np.random.default_rng(1)
    X, Y = random_initial_state(8, 16, 3, rng)
    model = TwoScaleLorenz96(8, 16, F=20.0, h=0.0, b=10.0, c=10.0, y_periodicity=periodicity)
    X_two, _ = model.spin_up(X, Y, 0.001, 200)
    np.testing.assert_array_equal(X_two, one_scale_run(X, 20.0, 0.001, 200))


def test_one_scale_tendency_matches_the_written_equation():
    X = np.arange(1.0, 9.0)
    K = len(X)
    expected = [X[(k - 1) % K] * (X[(k + 1) % K] - X[(k - 2) % K]) - X[k] + 8.0 for k in range(K)]
    np.testing.assert_allclose(l96_tendency(X, 8.0), expected)
    np.testing.assert_allclose(l96_tendency(torch.tensor(X), 8.0).numpy(), expected)


def test_ring_coupling_crosses_sectors_and_sector_coupling_does_not():
    X = np.zeros((1, 4))
    Y = np.zeros((1, 4, 3))
    Y[0, 0, 1] = 1.0  # (j-1) neighbour of the last fast variable of sector 0, whose j+1 is in sector 1
    ring = TwoScaleLorenz96(4, 3, 0.0, 1.0, 10.0, 10.0, "ring").tendencies((X, Y))[1]
    sector = TwoScaleLorenz96(4, 3, 0.0, 1.0, 10.0, 10.0, "sector").tendencies((X, Y))[1]
    Y2 = Y.copy()
    Y2[0, 1, 0] = 2.0
    ring2 = TwoScaleLorenz96(4, 3, 0.0, 1.0, 10.0, 10.0, "ring").tendencies((X, Y2))[1]
    sector2 = TwoScaleLorenz96(4, 3, 0.0, 1.0, 10.0, 10.0, "sector").tendencies((X, Y2))[1]
    assert ring2[0, 0, 2] != ring[0, 0, 2]  # the ring sees sector 1's Y
    assert sector2[0, 0, 2] == sector[0, 0, 2]  # the sector-periodic model does not


def test_rk4_converges_at_fourth_order():
    rng = np.random.default_rng(0)
    X, Y = random_initial_state(8, 8, 1, rng)
    model = TwoScaleLorenz96(8, 8, 20.0, 1.0, 10.0, 10.0)
    X, Y = model.spin_up(X, Y, 0.001, 2000)
    T = 0.2
    ref = model.spin_up(X, Y, T / 3200, 3200)[0]
    errors = []
    for n in (50, 100, 200):
        errors.append(np.abs(model.spin_up(X, Y, T / n, n)[0] - ref).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all(orders > 3.7), orders


def test_coarse_euler_with_the_exact_residual_reproduces_the_truth():
    """The MNO paper's target makes its forward-Euler coarse model exact (test_full_subgrid_forcing)."""
    rng = np.random.default_rng(2)
    model = TwoScaleLorenz96(4, 4, 20.0, 0.5, 10.0, 8.0, "sector")
    X, Y = model.spin_up(*random_initial_state(4, 4, 2, rng), 0.005, 400)
    xs, _, _ = model.run(X, Y, 0.005, 21, 1)
    f = (xs[:, 1:] - xs[:, :-1]) / 0.005 - l96_tendency(xs[:, :-1], 20.0)
    state = xs[:, 0]
    for t in range(20):
        coarse = CoarseModel(20.0, 0.005, "euler", lambda x, t=t: f[:, t])
        state = coarse.step(state)
    np.testing.assert_allclose(state, xs[:, 20], atol=1e-9)


def test_committed_regression_value():
    """A fixed seed, 1 MTU of the standard system; the number was computed once and committed."""
    rng = np.random.default_rng(123)
    model = TwoScaleLorenz96(8, 32, 20.0, 1.0, 10.0, 10.0)
    X, Y = model.spin_up(*random_initial_state(8, 32, 1, rng), 0.001, 1000)
    np.testing.assert_allclose(X[0, :3], REGRESSION_X, rtol=1e-9)


REGRESSION_X = [-0.3200360744583177, 2.8667521060444625, 8.50425904280556]


def test_constructor_rejects_bad_sizes():
    with pytest.raises(ValueError, match="K must be at least 4"):
        TwoScaleLorenz96(3, 8, 20.0, 1.0, 10.0, 10.0)
    with pytest.raises(ValueError, match="y_periodicity"):
        TwoScaleLorenz96(8, 8, 20.0, 1.0, 10.0, 10.0, "torus")


def test_a_start_that_blows_up_is_drawn_again_and_the_others_stay_as_they_were(monkeypatch):
    import surrogate.lorenz96.data as D
    from surrogate.core.case import load_case
    from surrogate.lorenz96.physics import random_initial_state

    case = load_case("cases/lorenz96_mno_paper.yaml", "smoke")
    task = D.chunk_tasks(case, 6, 0.05, "train")[0]
    clean = D.simulate_chunk(task)
    assert all(np.isfinite(a).all() for a in clean)

    calls = []

    def first_start_explodes(K, J, n, rng):
        X, Y = random_initial_state(K, J, n, rng)
        calls.append(n)
        if len(calls) == 1:
            Y[1] *= 1e6  # RK4 at the solver's step cannot follow fast variables this large
        return X, Y

    monkeypatch.setattr(D, "random_initial_state", first_start_explodes)
    x, u, before = D.simulate_chunk(task)
    assert calls == [6, 1]  # only the start that blew up was drawn again
    assert all(np.isfinite(a).all() for a in (x, u, before))
    keep = np.arange(6) != 1
    assert np.array_equal(x[keep], clean[0][keep]) and not np.array_equal(x[1], clean[0][1])

    monkeypatch.setattr(D, "random_initial_state",
                        lambda K, J, n, rng: (np.zeros((n, K)), 1e6 * rng.standard_normal((n, K, J))))
    with pytest.raises(ValueError, match="solver.dt"):
        D.simulate_chunk(task)

"""PROSE ODE families: parameters, RK4 against solve_ivp, rejection, noise, train/test distances."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from surrogate.prose.odes import (
    FAMILIES,
    N_OBSERVED,
    add_noise,
    get_family,
    integrate,
    is_valid,
    nearest_distance,
    simulate,
    time_grid,
)
from surrogate.prose.symbols import round_significant

FAMILY_NAMES = list(FAMILIES)


def test_twelve_three_dimensional_families():
    assert len(FAMILIES) == 12
    assert all(f.dim == 3 for f in FAMILIES.values())
    with pytest.raises(ValueError, match="choose from"):
        get_family("lorenz96")


def test_time_grid_is_the_papers():
    t = time_grid()
    assert len(t) == 192 and t[0] == 0 and t[-1] == 6
    assert t[N_OBSERVED - 1] < 2 < t[N_OBSERVED]  # observed [0, 1.98], predicted [2.01, 6]


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_parameters_within_ten_percent_and_three_digits(name):
    family = FAMILIES[name]
    p = family.draw_parameters(2000, np.random.default_rng(0))
    c = family.nominal_values
    # rounding to 3 digits may step at most half a unit of the 3rd digit beyond the interval
    slack = 0.1 * np.abs(c) + 0.0055 * 1.1 * np.abs(c)
    assert np.all(np.abs(p - c) <= slack)
    assert np.array_equal(p, round_significant(p))
    # the draws fill the interval: both ends are approached
    assert np.all(np.abs(p.max(0) - (c + 0.1 * np.abs(c))) < 0.01 * np.abs(c))
    assert np.all(np.abs(p.min(0) - (c - 0.1 * np.abs(c))) < 0.01 * np.abs(c))


def test_nominal_vector_field_is_the_textbook_lorenz():
    u = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(FAMILIES["lorenz"].vector_field(u), [10 * (2 - 1), 1 * (28 - 3) - 2, 2 - 8 / 3 * 3])


@pytest.mark.parametrize("name", FAMILY_NAMES)
def test_rk4_matches_solve_ivp(name):
    family = FAMILIES[name]
    rng = np.random.default_rng(4)
    p = family.draw_parameters(1, rng)
    _, x0, _ = simulate(family, p, 1, rng)  # an initial state whose orbit stays bounded
    x0 = x0[0]
    t = time_grid()
    u = integrate(family, p, x0)[0]
    ref = solve_ivp(lambda _, y: family.vector_field(y, p[0]), (0, 6), x0[0], method="DOP853",
                    t_eval=t, rtol=1e-10, atol=1e-10).y.T
    assert np.linalg.norm(u - ref) / np.linalg.norm(ref) < 1e-3


def test_rk4_is_fourth_order():
    family, p, x0 = FAMILIES["rossler"], np.array([[0.1, 0.1, 14.0]]), np.array([[1.0, -1.0, 0.5]])
    t = np.linspace(0, 2, 11)
    fine = integrate(family, p, x0, t, substeps=512)
    errors = [np.abs(integrate(family, p, x0, t, substeps=s) - fine).max() for s in (8, 16)]
    assert 12 < errors[0] / errors[1] < 20  # 2**4 = 16


def test_blow_up_is_rejected_and_redrawn():
    family = FAMILIES["sprott_linz_f"]
    p = np.array([[0.5]])
    # from (5, 5, 5) the u0**2 term drives the orbit out of |u| < 1e3
    bad = integrate(family, p, np.array([[20.0, 20.0, 20.0]]))
    assert not is_valid(bad)[0]
    u, u0, ok = simulate(family, np.repeat(p, 20, 0), 3, np.random.default_rng(0))
    assert u.shape == (20, 3, 192, 3) and ok.all() and is_valid(u).all()
    assert np.all(np.abs(u0) <= 2) and np.array_equal(u[:, :, 0], u0)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="shape"):
        integrate(FAMILIES["lorenz"], np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="uniform"):
        integrate(FAMILIES["lorenz"], np.ones((1, 3)), np.zeros((1, 3)), times=np.array([0.0, 1.0, 3.0]))


def test_noise_is_two_percent_of_the_trajectory_norm():
    rng = np.random.default_rng(5)
    u = rng.uniform(-3, 3, (7, 192, 3))
    noisy = add_noise(u, 0.02, rng)
    ratio = np.linalg.norm(noisy - u, axis=(1, 2)) / np.linalg.norm(u, axis=(1, 2))
    np.testing.assert_allclose(ratio, 0.02, rtol=1e-10)
    assert np.array_equal(add_noise(u, 0.0, rng), u)
    with pytest.raises(ValueError, match="noise level"):
        add_noise(u, -0.1, rng)


def test_nearest_distance_in_units_of_nominal():
    family = FAMILIES["lorenz"]
    c = family.nominal_values
    train = np.stack([c, c * 1.05])
    test = np.stack([c * 1.01, c * 0.9])
    np.testing.assert_allclose(nearest_distance(family, test, train), [0.01, 0.1])

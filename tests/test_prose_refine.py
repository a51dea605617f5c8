"""Coefficient refinement of decoded equations: recovers known numbers, leaves missing systems alone, checks options."""
import numpy as np
import pytest

from surrogate.prose.baselines import _numbers_as_parameters
from surrogate.prose.odes import FAMILIES, add_noise, integrate, time_grid
from surrogate.prose.refine import Refinement, as_refinement, refine_systems, significant_digits
from surrogate.prose.symbols import bind, round_significant

LORENZ = FAMILIES["lorenz"]
TRUE = np.array([10.3, 27.1, 2.71])


@pytest.fixture(scope="module")
def lorenz_observed():
    """Two noisy Lorenz trajectories as PROSE sees them: 32 points on [0, 2], 2% noise."""
    t = time_grid()[:64:2]
    starts = np.array([[1.0, -1.0, 0.5], [-1.5, 0.3, 1.2]])
    clean = integrate(LORENZ, np.repeat(TRUE[None], 2, axis=0), starts, time_grid())[:, :64:2]
    return t, add_noise(clean, 0.02, np.random.default_rng(0))


def _numbers(system) -> np.ndarray:
    return np.array(_numbers_as_parameters(system)[1])


def _guesses() -> list:
    """Decoded-like systems: every parameter 10% off, in both directions."""
    return [LORENZ.equation(TRUE * np.array([1.1, 0.9, 1.1])), LORENZ.equation(TRUE * np.array([0.9, 1.1, 0.9]))]


WEAK_FORM_ONLY = Refinement(weak_form_iterations=3, trajectory_steps=0)


@pytest.mark.parametrize("options, gain", [(Refinement(), 4), (WEAK_FORM_ONLY, 2)],
                         ids=["trajectory_matching", "weak_form_only"])
def test_refinement_recovers_lorenz_coefficients_from_noisy_data(lorenz_observed, options, gain):
    t, u = lorenz_observed
    truth = _numbers(LORENZ.equation(TRUE))
    guesses = _guesses()
    refined = refine_systems(guesses, t, u, options)
    for guess, system in zip(guesses, refined):
        before = np.sqrt(np.mean((_numbers(guess) / truth - 1) ** 2))  # RMS relative error of the numbers
        after = np.sqrt(np.mean((_numbers(system) / truth - 1) ** 2))
        assert before > 0.09 and after < before / gain, (before, after)


def test_missing_systems_stay_missing_and_others_are_still_refined(lorenz_observed):
    t, u = lorenz_observed
    guesses = _guesses()
    refined = refine_systems([None, guesses[1]], t, u)
    assert refined[0] is None
    assert not np.allclose(_numbers(refined[1]), _numbers(guesses[1]))
    assert refine_systems([None, None], t, u) == [None, None]


def test_faithful_systems_are_not_modified(lorenz_observed):
    t, u = lorenz_observed
    guesses = _guesses()
    before = [_numbers(g) for g in guesses]
    refine_systems(guesses, t, u)
    for g, b in zip(guesses, before):
        np.testing.assert_array_equal(_numbers(g), b)


def test_a_system_that_cannot_be_fitted_keeps_its_decoded_numbers(lorenz_observed):
    t, u = lorenz_observed
    blowing_up = LORENZ.equation(TRUE * 1e3)  # diverges at once: no finite trajectory to match
    refined = refine_systems([blowing_up], t, u[:1])[0]
    assert np.all(np.isfinite(_numbers(refined)))


@pytest.mark.parametrize("refine, error, match", [
    ("yes", TypeError, "refine: expected True, False or a"),
    (1, TypeError, "refine: expected True, False or a"),
    ({"ridge": 1.0}, TypeError, "refine: expected True, False or a"),
])
def test_bad_refine_option_is_named(refine, error, match):
    with pytest.raises(error, match=match):
        as_refinement(refine)


def test_refine_option_values():
    assert as_refinement(False) is None and as_refinement(None) is None
    assert as_refinement(True) == Refinement()
    custom = Refinement(prior_scale=0.1)
    assert as_refinement(custom) is custom


@pytest.mark.parametrize("kwargs, match", [
    ({"ridge": -1.0}, "Refinement.ridge"),
    ({"smooth_window": 4}, "Refinement.smooth_window"),
    ({"smooth_window": 5, "smooth_order": 5}, "Refinement.smooth_order"),
    ({"weak_form_iterations": -1}, "Refinement.weak_form_iterations"),
    ({"trajectory_steps": 2.5}, "Refinement.trajectory_steps"),
    ({"prior_scale": 0.0}, "Refinement.prior_scale"),
    ({"p_exact": (0.9, 1.0)}, "Refinement.p_exact"),
    ({"p_exact": ()}, "Refinement.p_exact"),
    ({"p_exact": [0.5]}, "Refinement.p_exact"),
    ({"share_tolerance": -0.1}, "Refinement.share_tolerance"),
    ({"p_shared": 1.0}, "Refinement.p_shared"),
])
def test_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Refinement(**kwargs)


def test_bad_observations_are_named(lorenz_observed):
    t, u = lorenz_observed
    with pytest.raises(ValueError, match=r"u: expected shape \(B, N, d\)"):
        refine_systems(_guesses(), t, u[0])
    with pytest.raises(ValueError, match="strictly increasing"):
        refine_systems(_guesses(), t[::-1], u)
    uneven = t + np.linspace(0, 0.01, len(t)) ** 2
    assert all(s is not None for s in refine_systems(_guesses(), uneven, u, WEAK_FORM_ONLY))


def test_unevenly_sampled_observations_are_refined_and_forecast():
    """32 points at random times on [0, 2]: the trajectory fit integrates each interval in its own steps."""
    from surrogate.prose.refine import forecast

    rng = np.random.default_rng(4)
    grid = time_grid()
    picks = np.sort(np.concatenate([[0], rng.choice(np.arange(1, 64), 31, replace=False)]))
    assert np.ptp(np.diff(picks)) > 2  # really uneven
    starts = np.array([[1.0, -1.0, 0.5], [-1.5, 0.3, 1.2]])
    clean = integrate(LORENZ, np.repeat(TRUE[None], 2, axis=0), starts, grid)
    t, t_after = grid[picks], grid[64:128]
    exact = forecast([LORENZ.equation(TRUE)] * 2, t, clean[:, picks], t_after)
    assert np.abs(exact - clean[:, 64:128]).max() < 1e-5 * np.abs(clean).max()
    # the noise of the evenly sampled fixture; like there, some draws leave one of the two fits in a local minimum
    u = add_noise(clean[:, picks], 0.02, np.random.default_rng(0))
    truth = _numbers(LORENZ.equation(TRUE))
    for guess, system in zip(_guesses(), refine_systems(_guesses(), t, u)):
        before = np.sqrt(np.mean((_numbers(guess) / truth - 1) ** 2))
        after = np.sqrt(np.mean((_numbers(system) / truth - 1) ** 2))
        assert after < before / 4, (before, after)


HALVORSEN = FAMILIES["halvorsen"]


def test_numbers_written_exactly_stay_as_written_and_the_rest_improves():
    """Halvorsen's fixed 0.25s (written exactly by the decoder) are mostly kept; its parameter a is re-fitted."""
    rng = np.random.default_rng(1)
    t = time_grid()[:64:2]
    a_true = np.array([-0.362, -0.331, -0.37, -0.34, -0.35, -0.328])
    starts = rng.uniform(-2, 2, size=(len(a_true), 3))
    clean = integrate(HALVORSEN, a_true[:, None], starts, time_grid())[:, :64:2]
    u = add_noise(clean, 0.02, rng)
    # decoded-like: a off by 7% and written with 3 digits, the 0.25s exact
    guesses = [HALVORSEN.equation([round_significant(a * f)]) for a, f in zip(a_true, [1.07, 0.93] * 3)]
    numbers = np.array([_numbers(g) for g in guesses])
    selected = np.array([_numbers(s) for s in refine_systems(guesses, t, u)])
    all_free = np.array([_numbers(s) for s in refine_systems(guesses, t, u, Refinement(select_numbers=False))])
    fixed = numbers == 0.25
    assert fixed.sum() == 3 * len(a_true)
    assert np.mean(selected[fixed] == 0.25) >= 0.8  # kept as written ...
    assert np.all(all_free[fixed] != 0.25)  # ... where fitting every number moves all of them
    before = np.abs(numbers[~fixed].reshape(len(a_true), 3) / a_true[:, None] - 1)
    after = np.abs(selected[~fixed].reshape(len(a_true), 3) / a_true[:, None] - 1)
    assert np.mean(after) < 0.6 * np.mean(before), (before.mean(), after.mean())


def test_significant_digits_of_decoded_numbers():
    np.testing.assert_array_equal(significant_digits(np.array([3.0, 0.5, -10.0, 0.25, -14.0, 0.173, 0.0, 0.3996])),
                                  [1, 1, 1, 2, 2, 3, 1, 4])


def test_numbers_of_one_parameter_are_fitted_as_one():
    """Thomas writes b three times; the decoder's three (different) guesses are mostly merged into one fitted b."""
    thomas = FAMILIES["thomas"]
    rng = np.random.default_rng(2)
    t = time_grid()[:64:2]
    b = rng.uniform(0.153, 0.187, 6)
    clean = integrate(thomas, b[:, None], rng.uniform(-2, 2, (6, 3)), time_grid())[:, :64:2]
    u = add_noise(clean, 0.02, rng)
    shape = _numbers_as_parameters(thomas.equation([0.17]))[0]
    guesses = [bind(shape, {f"c{i}": -round_significant(v * f) for i, f in enumerate((1.07, 0.94, 1.03))}) for v in b]
    shared = np.array([_numbers(s) for s in refine_systems(guesses, t, u)])
    separate = np.array([_numbers(s) for s in refine_systems(guesses, t, u, Refinement(share_tolerance=0.0))])
    one_b = np.all(shared == shared[:, :1], axis=1)
    assert one_b.sum() >= 3 and not np.any(np.all(separate == separate[:, :1], axis=1))
    error = lambda numbers: np.mean(np.abs(-numbers / b[:, None] - 1))  # noqa: E731
    decoded = np.array([_numbers(g) for g in guesses])
    assert error(shared) < error(separate) < error(decoded)


def test_forecast_from_the_fitted_state_beats_the_noisy_last_point_and_is_exact_without_noise():
    from surrogate.prose.baselines import integrate_systems
    from surrogate.prose.refine import forecast

    grid = time_grid()
    t, t_after = grid[:64:2], grid[63:128]  # 32 observed points on [0, 2]; forecast on [2, 4], between them too
    rng = np.random.default_rng(1)
    starts = rng.uniform(-2, 2, (8, 3))
    clean = integrate(LORENZ, np.repeat(TRUE[None], 8, axis=0), starts, grid)
    systems = [LORENZ.equation(TRUE)] * 8
    exact = forecast(systems, t, clean[:, :64:2], t_after)
    assert np.abs(exact - clean[:, 63:128]).max() < 1e-5 * np.abs(clean).max()

    noisy = add_noise(clean[:, :64:2], 0.02, rng)
    error = lambda pred: np.linalg.norm(pred - clean[:, 63:128], axis=(1, 2))  # noqa: E731
    fitted = forecast(systems, t, noisy, t_after)
    from_last = integrate_systems(systems, noisy[:, -1], t_after)
    assert np.median(error(fitted)) < 0.5 * np.median(error(from_last))


def test_forecast_leaves_missing_systems_empty_and_names_bad_query_times(lorenz_observed):
    from surrogate.prose.refine import forecast

    t, u = lorenz_observed
    out = forecast([None, _guesses()[1]], t, u, [2.0, 2.5])
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    with pytest.raises(ValueError, match="t_query"):
        forecast(_guesses(), t, u, [-1.0])

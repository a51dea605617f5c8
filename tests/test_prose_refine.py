"""Coefficient refinement of decoded equations: recovers known numbers, leaves missing systems alone, checks options."""
import numpy as np
import pytest

from surrogate.prose.baselines import _numbers_as_parameters
from surrogate.prose.odes import FAMILIES, add_noise, integrate, time_grid
from surrogate.prose.refine import Refinement, as_refinement, refine_systems

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
    with pytest.raises(ValueError, match="evenly spaced"):
        refine_systems(_guesses(), uneven, u)
    assert all(s is not None for s in refine_systems(_guesses(), uneven, u, WEAK_FORM_ONLY))

"""The compiled stack machine: the same numbers as the numpy evaluator, the same divergence rule, safe input."""
import numpy as np
import pytest

from surrogate.prose import refine as R
from surrogate.prose.baselines import rk4
from surrogate.prose.compiled import CompiledSystem, bytecode
from surrogate.prose.odes import FAMILIES, integrate, time_grid
from surrogate.prose.symbols import InvalidExpression, compile_system, from_tokens, op, placeholder, var


@pytest.mark.parametrize("name", list(FAMILIES))
def test_integration_matches_the_numpy_generator_to_the_bit(name):
    family = FAMILIES[name]
    rng = np.random.default_rng(0)
    params = family.draw_parameters(5, rng)
    u0 = rng.uniform(-2, 2, (5, 3))
    t = time_grid()[:40]
    compiled = CompiledSystem(family.system, family.parameter_names).integrate(params, u0, t, substeps=3)
    np.testing.assert_array_equal(compiled, integrate(family, params, u0, t, substeps=3))


def test_divergence_and_division_by_zero_give_nan_rows_like_the_numpy_integrator():
    # du/dt = u^2 blows up at t = 1/u0; 1/u at u = 0 is inf; the other rows are untouched
    system = from_tokens(["pow2", "u_0", "|", "inv", "u_1"], dim=2)
    u0 = np.array([[4.0, 1.0], [0.1, 0.0], [0.1, 1.0]])
    t = np.linspace(0.0, 1.0, 11)
    field = compile_system(system)
    expected = rk4(field, u0, t, substeps=4)
    got = CompiledSystem(system).integrate(np.zeros((3, 0)), u0, t, substeps=4)
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[0, -1]).all() and np.isnan(got[1, 1:]).all() and np.isfinite(got[2]).all()


def test_stack_depth_and_instructions():
    code = bytecode((op("add", var(0), op("mul", var(1), op("sin", var(2)))),), ())
    assert code.stack_size == 3 and len(code.code) == 6 and list(code.starts) == [0, 6]


def test_unknown_parameters_and_placeholders_are_refused():
    from surrogate.prose.symbols import param
    with pytest.raises(InvalidExpression, match="parameter 'b' has no column; known: a"):
        bytecode((param("b"),), ("a",))
    with pytest.raises(InvalidExpression, match="cannot evaluate node"):
        bytecode((placeholder(),), ())
    with pytest.raises(ValueError, match=r"u0: expected shape \(R, 3\)"):
        CompiledSystem(FAMILIES["lorenz"].system, FAMILIES["lorenz"].parameter_names).integrate(
            np.ones((1, 3)), np.ones((1, 2)), time_grid()[:3], 1)


def test_number_selection_scores_rows_independently_of_how_they_are_chunked(monkeypatch):
    rng = np.random.default_rng(3)
    g, k, n = 7, 4, 30
    decoded = np.array([[10.2, -10.5, 2.67, 0.5]]).repeat(g, 0) * (1 + 0.02 * rng.standard_normal((g, k)))
    decoded[:, 3] = 0.5
    whitened = rng.standard_normal((g, n, k + 3)) * np.array([3.0, 3.0, 10.0, 0.1, 1.0, 1.0, 1.0])
    fitted = decoded * (1 + 0.05 * rng.standard_normal((g, k)))
    candidates = R._shared_candidates(decoded[0], 0.1)
    assert candidates == ((0, 1),)
    options = R.Refinement()
    together = R._choose_models(whitened, fitted, decoded, candidates, options)
    monkeypatch.setattr(R, "_ROWS_TIMES_MODELS", 1)  # one row per chunk
    for i in range(g):
        alone = R._choose_models(whitened[i:i + 1], fitted[i:i + 1], decoded[i:i + 1], candidates, options)
        for a, b in zip(together, alone):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-12, atol=1e-12)


def test_uneven_times_take_each_interval_in_its_own_steps():
    family = FAMILIES["lorenz"]
    params, u0 = family.nominal_values[None], np.array([[1.0, 0.5, -0.5]])
    fine = time_grid()[:41]
    compiled = CompiledSystem(family.system, family.parameter_names)
    # every other point of the grid, then single points: 16 steps per double interval, 8 per single one
    picks = np.concatenate([np.arange(0, 21, 2), np.arange(21, 41)])
    substeps = np.where(np.diff(picks) == 2, 16, 8)
    got = compiled.integrate(params, u0, fine[picks], substeps)
    np.testing.assert_allclose(got, integrate(family, params, u0, fine, substeps=8)[:, picks], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="strictly increasing"):
        compiled.integrate(params, u0, fine[::-1], 8)

"""PROSE end to end: smoke run through surrogate.run, load + predict, rejected inputs, baselines, cases."""
import json
from pathlib import Path

import numpy as np
import pytest
import sympy

import surrogate
from surrogate.core.case import CaseError, load_case
from surrogate.core.store import read_netcdf
from surrogate.prose.baselines import integrate_systems, nominal, systems_rhs
from surrogate.prose.odes import FAMILIES, integrate, time_grid
from surrogate.prose.predictor import skeleton_system
from surrogate.prose.symbols import InvalidExpression, to_tokens

CASES = Path(__file__).resolve().parents[1] / "cases"


@pytest.fixture
def run(prose_smoke_run) -> Path:
    return Path(prose_smoke_run)


@pytest.fixture(scope="module")
def observed():
    family = FAMILIES["lorenz"]
    t = time_grid()
    u = integrate(family, family.nominal_values[None], np.array([[1.0, -1.0, 0.5]]))[0]
    return t[:64], u[:64], t[64:]


def test_smoke_run_writes_metrics_predictions_and_figures(run):
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["family"] == "prose"
    metrics = json.loads((run / "metrics.json").read_text())
    got = {(r["method"], r["metric"]) for r in metrics["rows"]}
    for method in ("prose", "prose_data_only", "pysindy", "nominal", "prose_decoded"):
        for metric in ("rel_l2_clean_2-4_median", "rel_l2_clean_4-6_mean", "rel_l2_noisy_2-4_median",
                       "rel_l2_clean_2-4_median_lorenz", "rel_l2_clean_2-4_median_ood"):
            assert (method, metric) in got, (method, metric)
    for metric in ("valid_fraction", "rhs_rel_l2_median", "skeleton_match", "valid_fraction_noise0.05",
                   "rhs_rel_l2_median_skeleton_clean", "skeleton_match_skeleton_none", "inference_ms_per_trajectory"):
        assert ("prose", metric) in got, metric
    assert ("nominal", "rhs_rel_l2_median") in got and ("data", "test_train_distance_median") in got
    for metric in ("rhs_rel_l2_median", "rhs_rel_l2_median_lorenz", "rel_l2_clean_2-4_median",
                   "rel_l2_clean_4-6_median", "refine_ms_per_trajectory", "rhs_rel_l2_median_ood"):
        assert ("prose_refined", metric) in got, metric
    nominal_row = next(r for r in metrics["rows"] if r["method"] == "nominal" and r["metric"] == "rhs_rel_l2_median")
    assert 0 < nominal_row["value"] < 0.2  # parameters within 10% of nominal
    pred = read_netcdf(run / "predictions.nc")
    assert pred["u_prediction"].dims == ("method", "sample", "time", "component")
    assert all("units" in v.attrs and "long_name" in v.attrs for v in pred.variables.values())
    assert (run / "figures" / "trajectories.png").exists()


def test_load_and_predict_match_the_evaluation(run, observed):
    m = surrogate.load(run)
    t_obs, u_obs, t_query = observed
    u_query, equations = m.predict(t_obs, u_obs, t_query)
    assert u_query.shape == (128, 3) and np.isfinite(u_query).all()
    assert equations is None or (len(equations) == 3 and all(isinstance(e, sympy.Expr) for e in equations))
    batch, eqs = m.predict(t_obs, np.stack([u_obs, u_obs]), t_query, skeleton=["sigma*u_1 - sigma*u_0",
                                                                            "u_0*(rho - u_2) - u_1",
                                                                            "u_0*u_1 - beta*u_2"])
    assert batch.shape == (2, 128, 3) and len(eqs) == 2
    data_only = surrogate.load(run, method="prose_data_only")
    # the loaded model reproduces the stored predictions of the evaluation (normaliser inside the weights)
    pred = read_netcdf(run / "predictions.nc")
    ref = pred["u_prediction"].sel({"method": "prose_data_only"}).values[:3]
    again, _ = data_only.predict(pred["observed_time"].values, pred["u_observed"].values[:3], pred["time"].values)
    np.testing.assert_allclose(again, ref, rtol=1e-4, atol=1e-4)
    u_d, none = data_only.predict(t_obs, u_obs, t_query)
    assert u_d.shape == (128, 3) and none is None
    with pytest.raises(ValueError, match="data-only model"):
        data_only.predict(t_obs, u_obs, t_query, skeleton=["u_1", "u_0", "u_2"])


def test_predict_refines_equations_on_request(run, observed):
    m = surrogate.load(run)
    t_obs, u_obs, t_query = observed
    u_faithful, faithful = m.predict(t_obs, u_obs, t_query)
    u_refined, refined = m.predict(t_obs, u_obs, t_query, refine=True)
    np.testing.assert_array_equal(u_refined, u_faithful)  # the operator output does not change
    assert (faithful is None) == (refined is None)
    if refined is not None:
        assert len(refined) == 3 and all(isinstance(e, sympy.Expr) for e in refined)
        # same tree: the refined equation has the same variables in every component
        assert [e.free_symbols for e in refined] == [e.free_symbols for e in faithful]
    with pytest.raises(TypeError, match="refine: expected True, False or a"):
        m.predict(t_obs, u_obs, t_query, refine="yes")
    with pytest.raises(ValueError, match="this is the data-only model"):
        surrogate.load(run, method="prose_data_only").predict(t_obs, u_obs, t_query, refine=True)


def test_predict_forecasts_with_the_equation_on_request(run, observed):
    m = surrogate.load(run)
    t_obs, u_obs, t_query = observed
    u_eq, equations = m.predict(t_obs, u_obs, t_query, refine=True, trajectory="equation")
    assert u_eq.shape == (128, 3)
    if equations is None:  # no valid equation decoded: no forecast either
        assert np.isnan(u_eq).all()
    with pytest.raises(ValueError, match="trajectory: expected 'operator' or 'equation'"):
        m.predict(t_obs, u_obs, t_query, trajectory="symbolic")
    with pytest.raises(ValueError, match="this is the data-only model"):
        surrogate.load(run, method="prose_data_only").predict(t_obs, u_obs, t_query, trajectory="equation")


@pytest.mark.parametrize("change, match", [
    (lambda t, u, q: (t, u[:, :2], q), r"u_obs: expected shape \(N, 3\)"),
    (lambda t, u, q: (t[:10], u[:10], q), "at least 32 observed points"),
    (lambda t, u, q: (t[::-1], u, q), "t_obs: expected strictly increasing"),
    (lambda t, u, q: (t, np.where(np.arange(64)[:, None] == 5, np.nan, u), q), "u_obs: expected finite"),
    (lambda t, u, q: (t, u, q[:, None]), "t_query: expected a non-empty 1-D"),
    (lambda t, u, q: (t[:, None], u, q), "t_obs: expected a 1-D"),
])
def test_bad_observations_are_named(run, observed, change, match):
    m = surrogate.load(run)
    with pytest.raises(ValueError, match=match):
        m.predict(*change(*observed))


def test_code_and_unknown_functions_in_a_skeleton_are_rejected_unexecuted(run, observed, tmp_path):
    m = surrogate.load(run)
    marker = tmp_path / "executed"
    hostile = [f"__import__('os').system('touch {marker}')", "u_0", "u_1"]
    for skeleton, match in [(hostile, "not allowed|unknown function"),
                            (["exp(u_0)", "u_1", "u_2"], "unknown function 'exp'"),
                            (["u_0.__class__", "u_1", "u_2"], "not allowed"),
                            (["lambda: 1", "u_1", "u_2"], "not allowed"),
                            (["u_0", "u_1"], "expected 3 expressions"),
                            (["u_7", "u_1", "u_2"], "u_0..u_2"),
                            ("add u_0 exp u_1 | u_1 | u_2", "unknown token 'exp'")]:
        with pytest.raises(InvalidExpression, match=match):
            m.predict(*observed, skeleton=skeleton)
    assert not marker.exists()


def test_skeleton_inputs_agree_with_the_family_skeleton():
    lorenz, rossler = FAMILIES["lorenz"], FAMILIES["rossler"]
    want = to_tokens(lorenz.skeleton())
    assert to_tokens(skeleton_system(["sigma*u_1 - sigma*u_0", "rho*u_0 - u_0*u_2 - u_1", "u_0*u_1 - beta*u_2"],
                                     3)) == want
    assert to_tokens(skeleton_system(" ".join(want), 3)) == want  # prefix tokens
    assert to_tokens(skeleton_system(to_tokens(lorenz.equation()), 3)) == want  # numbers become placeholders
    assert to_tokens(skeleton_system(["-u_1 - u_2", "u_0 + a*u_1", "b + u_0*u_2 - c*u_2"], 3)) == \
        to_tokens(rossler.skeleton())
    u0, u1, u2, a, b, c = sympy.symbols("u_0 u_1 u_2 a b c")
    exprs = [-u1 - u2, u0 + a * u1, b + u0 * u2 - c * u2]
    assert skeleton_system(exprs, 3) == skeleton_system([str(e) for e in exprs], 3)


def test_equation_baselines_reproduce_the_generator():
    family = FAMILIES["rossler"]
    rng = np.random.default_rng(3)
    params = family.draw_parameters(4, rng)
    u0 = rng.uniform(-2, 2, (4, 3))
    times = time_grid()[62:]
    want = integrate(family, params, u0, times)
    got = integrate_systems([family.equation(p) for p in params], u0, times)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(nominal(family, u0, times),
                               integrate(family, np.repeat(family.nominal_values[None], 4, 0), u0, times))
    points = rng.uniform(-5, 5, (4, 7, 3))
    np.testing.assert_allclose(systems_rhs([family.equation(p) for p in params], points),
                               np.stack([family.vector_field(x, p) for x, p in zip(points, params)]))


def test_case_files_and_profiles_validate():
    for profile in (None, "smoke", "full", "held_out", "no_corruption"):
        load_case(CASES / "prose.yaml", profile)
    load_case(CASES / "prose_gpu.yaml", "smoke")
    with pytest.raises(CaseError, match="held_out"):
        load_case(CASES / "prose.yaml", overrides=["data.families=[lorenz]", "data.held_out=[rossler]"])
    with pytest.raises(CaseError, match="decoded"):
        load_case(CASES / "prose.yaml", overrides=["surrogate.symbols=false"])

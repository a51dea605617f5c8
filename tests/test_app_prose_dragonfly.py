"""The explorer's PROSE and Dragonfly pages on smoke runs: they render, react to inputs, and say what is
wrong instead of failing."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")

from test_app_pages import open_app, texts  # noqa: E402

from surrogate import app_dragonfly, app_prose  # noqa: E402


@pytest.fixture
def results_with(tmp_path):
    """A results folder holding copies of the given run folders (a page may then damage them)."""
    def make(*runs: Path) -> Path:
        for run in runs:
            run = Path(run).resolve()
            shutil.copytree(run, tmp_path / run.parent.name / run.name, symlinks=True)
        return tmp_path
    return make


def test_dragonfly_page_shows_topology_load_and_forecasts(dragonfly_smoke_run, results_with):
    results = results_with(dragonfly_smoke_run)
    at = open_app(results, "dragonfly")
    assert len(at.dataframe) == 1 and {"method", "MAPE_percent", "coverage80"} <= set(at.dataframe[0].value.columns)
    at.slider(key="df_window").set_value(0).run()
    assert not at.exception
    options = at.selectbox(key="df_scenario").options
    at.selectbox(key="df_scenario").select_index(len(options) - 1).run()
    assert not at.exception


def test_dragonfly_page_survives_missing_predictions(dragonfly_smoke_run, results_with):
    results = results_with(dragonfly_smoke_run)
    run = next(results.glob("dragonfly_smart/2*"))
    (run / "predictions.nc").write_bytes(b"CDF\x01 truncated")
    at = open_app(results, "dragonfly")
    assert "unreadable" in texts(at, "info")


def test_dragonfly_forecast_table_matches_the_run_metrics(dragonfly_smoke_run):
    scenarios = app_dragonfly.scenarios(dragonfly_smoke_run)
    assert scenarios and {s["split"] for s in scenarios} <= set(app_dragonfly.HELD_OUT)
    frame, why = app_dragonfly.forecasts(dragonfly_smoke_run, scenarios[0]["split"], scenarios[0]["index"])
    assert why == "" and (frame["low80"] <= frame["high80"]).all() and (frame["simulated"] > 0).all()
    assert app_dragonfly.topology_figure(app_dragonfly.load_scenario(dragonfly_smoke_run, scenarios[0]["name"]),
                                         0)[:4] == b"\x89PNG"


def test_prose_page_forecasts_and_writes_equations(prose_smoke_run, results_with):
    results = results_with(prose_smoke_run)
    at = open_app(results, "prose")
    # the smoke model writes no valid equation, so there is nothing to refine (see the stand-in test below)
    assert [m.label for m in at.metric] == ["relative L2 on (2, 4]", "relative L2 on (4, 6]"]
    assert at.latex and r"\dot u_0" in at.latex[0].value  # the true equation
    at.number_input(key="prose_u0_0").set_value(3.0).run()
    assert "must be between -2 and 2" in texts(at, "error")
    at.number_input(key="prose_u0_0").set_value(1.0).run()
    at.selectbox(key="prose_family").select("lorenz").run()
    assert not at.exception and not at.error


def test_prose_exploration_reports_blow_ups_as_sentences(prose_smoke_run):
    import surrogate

    model = surrogate.load(prose_smoke_run)
    ex = app_prose.explore(model, "lorenz", [10.0, 28.0, 8 / 3], [1.0, 0.5, -0.5], 0.0, refine=False)
    assert ex.predicted.shape == (len(ex.t_query), 3) and set(ex.errors) == {"rel_l2_(2,4]", "rel_l2_(4,6]"}
    assert ex.refined is None
    with pytest.raises(ValueError, match="leaves"):
        app_prose.explore(model, "lorenz", [10.0, 28.0, -30.0], [2.0, 2.0, 2.0], 0.0)


class _EquationModel:
    """Stands in for a trained fused model that decodes the true Lorenz equation: the page's wiring of the
    refined path (its errors, its message when the forecast diverges) without training one."""

    def __init__(self, diverge: bool):
        from types import SimpleNamespace

        from surrogate.prose.odes import FAMILIES
        from surrogate.prose.symbols import to_sympy

        self.model_ = SimpleNamespace(cfg=SimpleNamespace(symbols=True))
        self.equation = to_sympy(FAMILIES["lorenz"].equation([10.0, 28.0, 8 / 3]))
        self.diverge = diverge

    def predict(self, t_obs, u_obs, t_query, skeleton=None, refine=False, trajectory="operator"):
        from surrogate.prose.odes import FAMILIES, integrate

        u = integrate(FAMILIES["lorenz"], np.array([[10.0, 28.0, 8 / 3]]), u_obs[:1], np.concatenate([t_obs, t_query]))
        out = u[0, len(t_obs):] if refine else np.zeros((len(t_query), 3))
        if refine and self.diverge:
            out[len(out) // 2:] = np.nan
        return out, self.equation


@pytest.mark.parametrize("diverge", [False, True])
def test_prose_exploration_shows_the_refined_equation_and_its_forecast(diverge):
    ex = app_prose.explore(_EquationModel(diverge), "lorenz", [10.0, 28.0, 8 / 3], [1.0, 0.5, -0.5], 0.0)
    assert ex.refined.shape == ex.predicted.shape and ex.refined_equation is not None
    assert ex.errors["rel_l2_(2,4]"] == pytest.approx(1.0)  # the stand-in's operator output is zero
    assert ex.errors["refined_rel_l2_(2,4]"] < 1e-3  # the true equation from the (noise-free) first state
    assert ("leaves |u| < 1000" in ex.message) == diverge
    assert np.isnan(ex.errors["refined_rel_l2_(4,6]"]) == diverge
    assert "refined equation" in set(app_prose.trajectory_frame(ex)["series"])

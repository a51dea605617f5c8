"""The explorer's logic without Streamlit: listings, metrics, curves, comparisons, background runs,
the Lorenz96 live rollout and the bad-input checks.

`app_results` (also used by the page and browser tests) is one results folder holding two real
smoke runs and hand-made runs that failed, were interrupted, are half-written or corrupted.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate import app_logic as logic
from surrogate.core.store import read_json, read_netcdf

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"


def fake_run(results: Path, case: str, run_id: str, family: str = "lorenz96", meta: dict | None = None,
             meta_text: str | None = None, metrics_text: str | None = None) -> Path:
    """A run folder written by hand, for states a real run reaches only by failing."""
    path = results / case / run_id
    path.mkdir(parents=True)
    if meta_text is not None:
        (path / "meta.json").write_text(meta_text)
    else:
        (path / "meta.json").write_text(json.dumps({"case": case, "family": family, "profile": "smoke",
                                                    "started": "2026-01-01T00:00:00", **(meta or {})}))
    if metrics_text is not None:
        (path / "metrics.json").write_text(metrics_text)
    (path / "case.yaml").write_text(f"name: {case}\npipeline: {family}\n")
    return path


def build_app_results(folder: Path, smoke_run: Path) -> Path:
    """Build once per session (several test files ask for it; the marker makes later calls free)."""
    if (folder / ".complete").exists():
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    shutil.copytree(smoke_run, folder / "lorenz96_mno" / smoke_run.name, symlinks=True)
    import surrogate

    surrogate.run(CASES / "lorenz96_mno_paper.yaml", profile="smoke", results=folder, quiet=True)
    fake_run(folder, "lorenz96_mno", "20000101-000001-failed",
             meta={"status": "failed", "error": "RuntimeError: solver diverged", "stages_done": []})
    fake_run(folder, "lorenz96_mno", "20000101-000002-killed", meta={"status": "running", "stages_done": ["fit"]})
    fake_run(folder, "lorenz96_mno", "20000101-000003-interrupted", meta={"status": "interrupted"})
    fake_run(folder, "lorenz96_mno", "20000101-000004-corrupt", meta_text='{"case": "lorenz96_mno", "sta')
    fake_run(folder, "lorenz96_mno", "20000101-000005-halfmetrics", meta={"status": "finished"},
             metrics_text='{"rows": [{"method": "mno", "metr')
    fake_run(folder, "pig_helmholtz", "20000101-000006-pinnfail", family="pinn",
             meta={"status": "failed", "error": "ValueError: bad collocation"})
    (folder / ".complete").write_text("")
    return folder


@pytest.fixture(scope="session")
def app_results(tmp_path_factory, lorenz96_smoke_run) -> Path:
    return build_app_results(tmp_path_factory.getbasetemp() / "app_results", lorenz96_smoke_run)


def by_id(infos, suffix):
    return next(i for i in infos if i.run_id.endswith(suffix))


# ------------------------------------------------------------------ listing
def test_listing_gives_every_run_with_status_family_and_headline(app_results, lorenz96_smoke_run):
    infos = logic.list_run_infos(app_results)
    assert len(infos) == 8
    real = next(i for i in infos if i.run_id == lorenz96_smoke_run.name)
    head = read_json(lorenz96_smoke_run / "metrics.json")["headline"]
    assert (real.status, real.family, real.profile) == ("finished", "lorenz96", "smoke")
    assert real.headline == f"{head['method']} {head['metric']}" and real.headline_value == pytest.approx(head["value"])
    assert by_id(infos, "failed").status == "failed" and "solver diverged" in by_id(infos, "failed").error
    assert by_id(infos, "killed").status == "interrupted"  # "running" without a live process
    assert by_id(infos, "corrupt").status == "corrupted" and "unreadable" in by_id(infos, "corrupt").error
    assert "metrics.json is unreadable" in by_id(infos, "halfmetrics").error
    assert by_id(infos, "pinnfail").family == "pinn"


def test_runs_frame_filters_by_family_and_case(app_results):
    infos = logic.list_run_infos(app_results)
    assert len(logic.runs_frame(infos)) == 8
    pinn = logic.runs_frame(infos, family="pinn")
    assert list(pinn["case"]) == ["pig_helmholtz"] and list(pinn["status"]) == ["failed"]
    paper = logic.runs_frame(infos, case="lorenz96_mno_paper")
    assert len(paper) == 1 and paper["value"].notna().all()
    assert list(logic.runs_frame(infos, family="mmgp").columns) == logic.RUN_COLUMNS


def test_missing_or_wrong_results_folder_is_a_message_not_an_error(tmp_path):
    assert "does not exist" in logic.results_problem(tmp_path / "nope")
    assert logic.FIRST_RUN in logic.results_problem(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    assert "is a file" in logic.results_problem(tmp_path / "file")
    assert logic.results_problem(tmp_path) is None
    assert logic.list_run_infos(tmp_path / "nope") == [] and logic.list_run_infos(tmp_path) == []


def test_results_folder_comes_from_argv_then_environment_then_default():
    assert logic.default_results(["--results", "/a"], {"SURROGATE_RESULTS": "/b"}) == "/a"
    assert logic.default_results(["--results=/c"], {}) == "/c"
    assert logic.default_results([], {"SURROGATE_RESULTS": "/b"}) == "/b"
    assert logic.default_results([], {}) == "results"


def test_results_stamp_changes_when_a_run_appears(tmp_path):
    before = logic.results_stamp(tmp_path)
    time.sleep(0.01)
    fake_run(tmp_path, "c", "r1")
    assert logic.results_stamp(tmp_path) > before


# ------------------------------------------------------------------ one run
def test_metrics_tables_match_metrics_json(lorenz96_smoke_run):
    metrics, why = logic.read_metrics(lorenz96_smoke_run)
    assert why == ""
    main, rest = logic.main_and_other_metrics(metrics)
    assert list(main.columns) == [m for m in metrics["table_metrics"] if m in set(main.columns)]
    assert main.index[0] == metrics["surrogate"]
    for r in metrics["rows"]:
        if r["metric"] in metrics["table_metrics"]:
            assert main.loc[r["method"], r["metric"]] == pytest.approx(r["value"])
    assert len(rest) + main.notna().sum().sum() == len(metrics["rows"])
    assert not set(rest["metric"]) & set(metrics["table_metrics"])


def test_runs_without_readable_metrics_say_why(app_results):
    infos = logic.list_run_infos(app_results)
    assert logic.read_metrics(by_id(infos, "failed").path) == (None, "No metrics yet (status: failed).")
    metrics, why = logic.read_metrics(by_id(infos, "halfmetrics").path)
    assert metrics is None and "unreadable" in why


def test_learning_curves_come_from_training_json(lorenz96_smoke_run, tmp_path):
    curves, why = logic.learning_curves(lorenz96_smoke_run)
    hist = read_json(lorenz96_smoke_run / "model" / "training.json")
    assert why == ""
    mno = curves[curves["series"] == "mno offline"]
    assert list(mno["loss"]) == pytest.approx(hist["mno"]["offline"])
    rollout = curves[curves["series"] == "mno rollout"]
    assert rollout["epoch"].min() == len(hist["mno"]["offline"]) + 1  # the stages follow one another
    assert not curves["series"].str.startswith("null").any()  # closed-form fits have no curve
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "training.json").write_text("{not json")
    bad, why = logic.learning_curves(tmp_path)
    assert bad.empty and "unreadable" in why


def test_figures_case_and_log_of_a_run(lorenz96_smoke_run):
    names = {p.name for p in logic.figures(lorenz96_smoke_run)}
    assert {"forecast_rmse.png", "training.png"} <= names
    assert "pipeline: lorenz96" in logic.case_text(lorenz96_smoke_run)
    assert "run folder:" in logic.log_tail(lorenz96_smoke_run)


# ------------------------------------------------------------------ compare
def test_compare_puts_runs_side_by_side(app_results):
    infos = [i for i in logic.list_run_infos(app_results) if i.status == "finished" and i.headline]
    paths = [i.path for i in infos]
    table = logic.compare_metrics(paths, main_only=True)
    assert list(table.columns) == [i.label for i in infos]
    for i in infos:
        metric = i.headline.split()[1]
        assert table.loc[("surrogate", metric), i.label] == pytest.approx(i.headline_value)
    everything = logic.compare_metrics(paths, all_methods=True)
    assert len(everything) > len(table) and "null" in everything.index.get_level_values("method")
    curves = logic.compare_curves(paths)
    assert set(curves["run"]) == {i.label for i in infos}
    assert logic.compare_metrics([by_id(logic.list_run_infos(app_results), "failed").path]).empty


# ------------------------------------------------------------------ background runs
def test_background_run_reports_progress_and_stops_as_interrupted(tmp_path):
    case = CASES / "lorenz96_mno.yaml"
    job = logic.start_run(case, tmp_path, "smoke", ["train.epochs=500"])  # long enough to be stopped
    assert job.file.exists() and logic.list_jobs(tmp_path)[0].id == job.id
    assert job.command[1:4] == ["-m", "surrogate", "--results"] and "--profile" in job.command
    deadline = time.time() + 60
    progress = logic.job_progress(job)
    while progress["run_dir"] is None and time.time() < deadline:
        time.sleep(0.3)
        progress = logic.job_progress(job)
    assert progress["state"] == "running" and progress["alive"]
    assert Path(progress["run_dir"]).parent == tmp_path / "lorenz96_mno"
    logic.stop_job(job)
    while logic.job_progress(job)["alive"] and time.time() < deadline:
        time.sleep(0.2)
    final = logic.job_progress(job)
    assert final["state"] == "interrupted" and final["returncode"] == 130
    assert read_json(Path(final["run_dir"]) / "meta.json")["status"] == "interrupted"


def test_background_run_of_a_bad_case_fails_with_its_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pipeline: lorenz96\nsolver: {K: 2}\n")
    job = logic.start_run(bad, tmp_path / "results")
    deadline = time.time() + 60
    while logic.job_progress(job)["alive"] and time.time() < deadline:
        time.sleep(0.2)
    p = logic.job_progress(job)
    assert p["state"] == "failed" and p["returncode"] == 2 and "error:" in p["console"]
    with pytest.raises(FileNotFoundError):
        logic.start_run(tmp_path / "missing.yaml", tmp_path)


def test_case_profiles_and_overrides():
    assert logic.case_profiles(CASES / "lorenz96_mno.yaml")[:2] == ["default", "smoke"]
    assert logic.case_profiles(CASES / "nosuch.yaml") == []
    assert logic.parse_overrides("train.epochs=2  data.n_train=4") == (["train.epochs=2", "data.n_train=4"], "")
    items, why = logic.parse_overrides("epochs 2")
    assert items == [] and "key=value" in why


# ------------------------------------------------------------------ Lorenz96 exploration
def test_held_out_truth_is_the_test_trajectory(lorenz96_smoke_run):
    X = read_netcdf(lorenz96_smoke_run / "data" / "test.nc")["X"].values
    t, truth = logic.lorenz96_truth(lorenz96_smoke_run, "held-out", index=1, mtu=0.5)
    dt = logic.lorenz96_settings(lorenz96_smoke_run)["coarse_dt"]
    assert truth.shape == (round(0.5 / dt) + 1, X.shape[2]) and np.array_equal(truth, X[1, : len(truth)])
    assert t[1] == pytest.approx(dt)
    with pytest.raises(ValueError, match="between 0 and"):
        logic.lorenz96_truth(lorenz96_smoke_run, "held-out", index=len(X), mtu=0.5)


def test_random_truth_is_solved_live_and_reproducible(lorenz96_smoke_run):
    t, a = logic.lorenz96_truth(lorenz96_smoke_run, "random", seed=3, mtu=0.2)
    _, b = logic.lorenz96_truth(lorenz96_smoke_run, "random", seed=3, mtu=0.2)
    _, c = logic.lorenz96_truth(lorenz96_smoke_run, "random", seed=4, mtu=0.2)
    assert a.shape == (len(t), 8) and np.isfinite(a).all()
    assert np.array_equal(a, b) and not np.allclose(a, c)
    assert np.abs(np.diff(a, axis=0)).max() < 5  # spun up: a smooth trajectory, not integer noise


def test_rollouts_start_from_the_truth_and_errors_grow_from_zero(lorenz96_smoke_run):
    import surrogate

    t, truth = logic.lorenz96_truth(lorenz96_smoke_run, "held-out", index=0, mtu=0.5)
    models = {m: surrogate.load(lorenz96_smoke_run, method=m) for m in ("mno", "null")}
    preds = logic.lorenz96_rollouts(models, truth[0], len(truth) - 1)
    assert all(p.shape == truth.shape and np.array_equal(p[0], truth[0]) for p in preds.values())
    x, err = logic.lorenz96_frames(t, truth, preds, site=2)
    assert list(x.columns) == ["truth", "mno", "null"] and np.array_equal(x["truth"].values, truth[:, 2])
    assert err.iloc[0].abs().max() == 0 and (err.iloc[-1] > 0).all()
    index = read_json(lorenz96_smoke_run / "model" / "index.json")
    assert logic.saved_methods(lorenz96_smoke_run) == ("mno", index["methods"])


# ------------------------------------------------------------------ bad input, other families
def test_range_checks_give_sentences():
    assert logic.check_in_range(2, 0, 5, "Horizon") == ""
    assert "between 0 and 5" in logic.check_in_range(7, 0, 5, "Horizon")
    assert "must be a number" in logic.check_in_range("x", 0, 5, "Horizon")
    assert "between" in logic.check_in_range(float("nan"), 0, 5, "Horizon")


def test_mesh_upload_that_is_not_a_mesh_is_a_message(tmp_path):
    meshio = pytest.importorskip("meshio")
    assert logic.check_mesh_upload("notes.txt", b"hello")[1].startswith("notes.txt is not a mesh file")
    summary, why = logic.check_mesh_upload("shape.vtu", b"garbage, not XML")  # meshio exits on this one
    assert summary is None and "could not be read as a mesh" in why
    mesh = meshio.Mesh(np.random.default_rng(0).random((4, 3)), [("triangle", np.array([[0, 1, 2], [1, 2, 3]]))])
    mesh.write(tmp_path / "ok.vtu")
    summary, why = logic.check_mesh_upload("ok.vtu", (tmp_path / "ok.vtu").read_bytes())
    assert why == "" and summary == {"points": 4, "cells": 2, "cell_types": ["triangle"]}


def test_family_import_problems_are_sentences():
    assert logic.family_import_problem("lorenz96") == ""
    assert "not part of this installation" in logic.family_import_problem("weather")


def test_predictions_summary_lists_variables_with_units(lorenz96_smoke_run, tmp_path):
    table, why = logic.predictions_summary(lorenz96_smoke_run)
    assert why == "" and {"rmse", "x_reference"} <= set(table["variable"]) and (table["units"] != "").all()
    (tmp_path / "predictions.nc").write_bytes(b"CDF\x01 truncated")
    assert "unreadable" in logic.predictions_summary(tmp_path)[1]


def test_package_modules_do_not_import_streamlit():
    code = ("import sys, surrogate.app_logic, surrogate.app_launcher, surrogate.cli; "
            "assert 'streamlit' not in sys.modules, 'streamlit imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})


# ------------------------------------------------------------------ `surrogate app`
def test_launcher_finds_the_app_in_the_checkout_and_in_an_install(tmp_path, monkeypatch):
    from surrogate import app_launcher

    assert app_launcher.explorer_path() == ROOT / "apps" / "explorer.py"
    cmd = app_launcher.command(8765)
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("explorer.py")
    assert cmd[5:] == ["--server.port", "8765", "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    # an installed wheel puts apps/ under <prefix>/share/surrogate/apps
    monkeypatch.setattr(app_launcher, "__file__", str(tmp_path / "site-packages" / "surrogate" / "app_launcher.py"))
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    with pytest.raises(FileNotFoundError, match="not found"):
        app_launcher.explorer_path()
    installed = tmp_path / "venv" / "share" / "surrogate" / "apps"
    installed.mkdir(parents=True)
    (installed / "explorer.py").write_text("")
    assert app_launcher.explorer_path() == installed / "explorer.py"


def test_app_command_refuses_a_busy_port(capsys):
    import socket

    from surrogate.cli import _parser, main

    assert _parser().parse_args(["app", "--port", "8600"]).port == 8600
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["app", "--port", str(port)]) == 2
    assert f"port {port} is in use" in capsys.readouterr().err


def test_a_closure_with_memory_rolls_out_from_the_states_before_the_initial_one(tmp_path):
    import surrogate

    paper = Path(__file__).resolve().parents[1] / "cases" / "lorenz96_mno_paper.yaml"
    run = surrogate.run(paper, "smoke", ["train.rollout_epochs=0", "evaluate.cost=[]", "evaluate.baselines="
                                         "[{kind: mno_memory, memory: 4, modes: 4, width: 8, layers: 2}]"],
                        results=tmp_path, quiet=True)
    models = {m: surrogate.load(run, method=m) for m in ("mno", "mno_memory")}
    for source in ("held-out", "random"):
        t, truth, history = logic.lorenz96_truth(run, source, mtu=0.2, with_history=True)
        assert history.shape == (16, truth.shape[1])
        preds = logic.lorenz96_rollouts(models, truth[0], len(truth) - 1, history)
        assert set(preds) == {"mno", "mno_memory"} and np.array_equal(preds["mno_memory"][0], truth[0])
        assert np.isfinite(preds["mno_memory"]).all()
    # the random truth continues its own history by one coarse step
    _, truth, history = logic.lorenz96_truth(run, "random", mtu=0.2, with_history=True)
    assert np.abs(truth[0] - history[-1]).max() <= 2 * np.abs(np.diff(truth, axis=0)).max()
    assert set(logic.lorenz96_rollouts(models, truth[0], 3)) == {"mno"}  # no history: left out, not an error

"""Every page of the explorer under Streamlit's AppTest: with real smoke runs, with failed,
interrupted and corrupted runs, with an empty or missing results folder, and with 100 runs."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from test_app_logic import build_app_results  # noqa: E402

from surrogate import app_logic as logic  # noqa: E402

ENTRY = str(Path(__file__).resolve().parents[1] / "apps" / "explorer.py")
PAGES = ["runs", "run", "compare", "new_run", "lorenz96", "pinn", "mmgp", "prose", "dragonfly"]
TARGET_S = 3.0


@pytest.fixture(scope="session")
def app_results(tmp_path_factory, lorenz96_smoke_run) -> Path:
    """The folder of test_app_logic, built once per session whichever file asks first."""
    return build_app_results(tmp_path_factory.getbasetemp() / "app_results", lorenz96_smoke_run)


def open_app(results: Path | str, page: str | None = None) -> AppTest:
    at = AppTest.from_file(ENTRY, default_timeout=60)
    at.session_state["results_dir"] = str(results)
    at.run()
    if page is not None:
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def elements(node, kind: str) -> list:
    """Every element of a type in the tree (charts and images are not first-class in AppTest)."""
    found = []
    children = getattr(node, "children", None)
    for child in (children.values() if isinstance(children, dict) else []):
        if getattr(child, "type", None) == kind:
            found.append(child)
        found += elements(child, kind)
    return found


def texts(at: AppTest, what: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, what))


@pytest.fixture(scope="module")
def many_runs(tmp_path_factory, lorenz96_smoke_run) -> Path:
    """100 finished runs (meta and metrics only) across four cases."""
    root = tmp_path_factory.mktemp("many")
    meta = json.loads((lorenz96_smoke_run / "meta.json").read_text())
    for i in range(100):
        case = f"lorenz96_case{i % 4}"
        run = root / case / f"20260101-{i:06d}-abcdef"
        run.mkdir(parents=True)
        (run / "meta.json").write_text(json.dumps({**meta, "case": case}))
        shutil.copy(lorenz96_smoke_run / "metrics.json", run / "metrics.json")
    return root


# ------------------------------------------------------------------ every page, real and broken runs
def test_every_page_renders_without_exception_and_within_target(app_results):
    at = open_app(app_results)
    timings = {}
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()  # first load fills the caches
        assert not at.exception, (page, at.exception)
        t0 = time.perf_counter()
        at.run()
        timings[page] = time.perf_counter() - t0
        assert not at.exception, (page, at.exception)
    print("page render after first load (s):", {k: round(v, 3) for k, v in timings.items()})
    assert max(timings.values()) < TARGET_S, timings


def test_runs_page_lists_and_filters_runs(app_results):
    at = open_app(app_results, "runs")
    table = at.dataframe[0].value
    assert len(table) == 8 and {"finished", "failed", "interrupted", "corrupted"} <= set(table["status"])
    at.selectbox(key="runs_family").select("pinn").run()
    assert list(at.dataframe[0].value["case"]) == ["pig_helmholtz"]
    at.selectbox(key="runs_family").select("all").run()
    at.selectbox(key="runs_case").select("lorenz96_mno_paper").run()
    assert len(at.dataframe[0].value) == 1
    assert at.metric[0].value == "8"


def test_runs_page_opens_a_run(app_results):
    at = open_app(app_results, "runs")
    paper = next(i for i in logic.list_run_infos(app_results) if i.case == "lorenz96_mno_paper")
    at.selectbox(key="runs_open").select(next(j for j, i in enumerate(logic.list_run_infos(app_results))
                                              if i.path == paper.path)).run()
    at.button(key="runs_open_button").click().run()
    assert not at.exception
    assert at.session_state["selected_run"] == paper.path
    assert at.title[0].value == "Run" and paper.run_id in texts(at, "caption")


def test_run_page_for_every_run_shows_numbers_or_a_reason(app_results):
    infos = logic.list_run_infos(app_results)
    at = open_app(app_results, "run")
    for j, info in enumerate(infos):
        at.selectbox(key="run_select").select(j).run()
        assert not at.exception, (info.run_id, at.exception)
        assert at.metric[0].value == info.status
        if info.status == "finished" and info.headline:
            main = at.dataframe[0].value
            assert info.headline.split()[0] in main.index  # the surrogate's row
            assert elements(at.tabs[1], "vega_lite_chart"), "learning curves drawn"
            assert len(elements(at.tabs[2], "image")) >= 4
            assert "pipeline: lorenz96" in at.code[0].value
        else:
            shown = texts(at, "warning") + texts(at, "info")
            assert shown, info.run_id
            if info.error:
                assert info.error.split(";")[0][:30] in shown


def test_compare_page_puts_two_runs_side_by_side(app_results):
    at = open_app(app_results, "compare")
    chosen = at.multiselect(key="compare_runs").value
    assert len(chosen) == 2
    table = at.dataframe[0].value
    assert list(table.columns) == chosen and len(table) > 3
    assert elements(at.main, "vega_lite_chart")
    at.checkbox(key="compare_all_methods").check().run()
    assert len(at.dataframe[0].value) > len(table)
    at.multiselect(key="compare_runs").set_value(chosen[:1]).run()
    assert "Pick two or more runs" in texts(at, "info")


def test_new_run_page_offers_cases_and_rejects_bad_overrides(app_results):
    at = open_app(app_results, "new_run")
    assert "lorenz96_mno" in at.selectbox(key="newrun_case").options
    assert at.selectbox(key="newrun_profile").value == "smoke"
    at.text_input(key="newrun_overrides").input("epochs 2").run()
    assert "key=value" in texts(at, "error") and at.button(key="newrun_start").disabled


def test_new_run_page_starts_a_background_run_and_shows_it(tmp_path):
    at = open_app(tmp_path, "new_run")
    assert "No runs started from the app yet" in texts(at, "caption")
    at.selectbox(key="newrun_case").select("lorenz96_mno").run()
    at.button(key="newrun_start").click().run()
    assert "Started lorenz96_mno (smoke)" in texts(at, "success")
    [job] = logic.list_jobs(tmp_path)
    try:
        assert job.case == "lorenz96_mno" and job.profile == "smoke"
        at.run()
        assert "lorenz96_mno" in texts(at, "markdown")  # the progress panel lists it
    finally:
        logic.stop_job(job)
        deadline = time.time() + 30
        while logic.job_progress(job)["alive"] and time.time() < deadline:
            time.sleep(0.2)
    assert not logic.job_progress(job)["alive"]


def test_lorenz96_page_rolls_out_held_out_and_random_states(app_results):
    at = open_app(app_results, "lorenz96")
    assert at.multiselect(key="l96_methods").value == ["mno", "null"]
    assert len(elements(at.main, "vega_lite_chart")) == 2 and "Error at" in texts(at, "caption")
    at.radio(key="l96_source").set_value("random").run()
    at.number_input(key="l96_seed").set_value(5).run()
    at.slider(key="l96_mtu").set_value(0.5).run()
    assert not at.exception and "Error at 0.50 MTU" in texts(at, "caption")
    at.multiselect(key="l96_methods").set_value([]).run()
    assert "Pick at least one closure" in texts(at, "info")


def test_lorenz96_page_on_the_paper_case(app_results):
    at = open_app(app_results, "lorenz96")
    options = at.selectbox(key="l96_run").options
    at.selectbox(key="l96_run").select(next(j for j, o in enumerate(options) if "paper" in o)).run()
    assert not at.exception
    assert "mno" in at.multiselect(key="l96_methods").value
    assert len(elements(at.main, "vega_lite_chart")) == 2


def test_family_pages_show_failed_runs_or_say_there_are_none(app_results):
    at = open_app(app_results, "pinn")
    assert "bad collocation" in texts(at, "warning")  # the failed PINN run, explained
    assert "No metrics yet" in texts(at, "info")
    for page in ("mmgp", "prose", "dragonfly"):
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception
        assert "No runs of this family yet" in texts(at, "info")


# ------------------------------------------------------------------ empty, missing, many
def test_empty_results_folder_says_how_to_make_a_first_run(tmp_path):
    at = open_app(tmp_path)
    assert logic.FIRST_RUN in texts(at, "info")
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
    at.switch_page("views/lorenz96.py").run()
    assert "No runs of this family yet" in texts(at, "info")


def test_missing_results_folder_is_a_message_on_every_page(tmp_path):
    at = open_app(tmp_path / "nope")
    for page in PAGES:
        at.switch_page(f"views/{page}.py").run()
        assert not at.exception, page
        if page != "new_run":
            assert "does not exist" in texts(at, "error"), page


def test_runs_page_with_100_runs_loads_within_target(many_runs):
    import streamlit as st

    st.cache_data.clear()  # measure a cold listing, not a cached one
    t0 = time.perf_counter()
    at = open_app(many_runs)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    at.run()
    warm = time.perf_counter() - t0
    print(f"Runs page with 100 runs: first load {cold:.2f} s, after {warm:.3f} s")
    assert len(at.dataframe[0].value) == 100
    assert cold < TARGET_S and warm < TARGET_S

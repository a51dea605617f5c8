"""Streamlit pieces shared by the pages: cached readers, the results-folder picker, run pickers.

The logic lives in `surrogate.app_logic`; this module only adds caching and layout. Caches are keyed
by path + mtime stamp, so a new or rewritten run shows up without restarting the app.
"""
from __future__ import annotations

from pathlib import Path

import altair as alt
import pandas as pd
import streamlit as st

from surrogate import app_logic as logic

APP_DIR = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ cached readers
@st.cache_data(show_spinner=False, max_entries=32)
def run_infos(results: str, stamp: float) -> list[logic.RunInfo]:
    return logic.list_run_infos(results)


@st.cache_data(show_spinner=False, max_entries=256)
def run_metrics(path: str, stamp: float):
    return logic.read_metrics(path)


@st.cache_data(show_spinner=False, max_entries=256)
def run_curves(path: str, stamp: float):
    return logic.learning_curves(path)


@st.cache_data(show_spinner=False, max_entries=64)
def compare_table(paths: tuple[str, ...], stamps: tuple[float, ...], all_methods: bool, main_only: bool):
    return logic.compare_metrics(list(paths), all_methods=all_methods, main_only=main_only)


@st.cache_data(show_spinner=False, max_entries=64)
def compare_curves(paths: tuple[str, ...], stamps: tuple[float, ...]):
    return logic.compare_curves(list(paths))


@st.cache_resource(show_spinner=False, max_entries=32)
def loaded_model(path: str, stamp: float, method: str):
    """A trained model, shared by every session; never mutated by a page."""
    import surrogate

    return surrogate.load(path, method=method)


# ------------------------------------------------------------------ results folder
def results_sidebar() -> str:
    """The results folder picker (on every page); stores the folder in session state."""
    if "results_dir" not in st.session_state:
        st.session_state["results_dir"] = logic.default_results()
    st.sidebar.text_input("Results folder", key="results_dir",
                          help="folder of run folders; `surrogate --results R app` sets it")
    results = st.session_state["results_dir"].strip()
    problem = logic.results_problem(results)
    if problem:
        st.sidebar.error(problem)
    return results


def results() -> str:
    return st.session_state.get("results_dir", logic.default_results()).strip()


def infos_or_stop() -> list[logic.RunInfo]:
    """Every run, or a clear message (and the end of the page) when there is nothing to show."""
    res = results()
    problem = logic.results_problem(res)
    if problem:
        st.error(problem)
        st.stop()
    infos = run_infos(res, logic.results_stamp(res))
    if not infos:
        first_run_hint(res)
        st.stop()
    return infos


def first_run_hint(res: str) -> None:
    st.info(f"No runs in `{res}` yet. Make a first run from a terminal:\n\n```\n{logic.FIRST_RUN}\n```\n\n"
            "or start one on the **New run** page.")


def pick_run(infos: list[logic.RunInfo], key: str, label: str = "Run") -> logic.RunInfo | None:
    """A run picker that remembers the run last opened on any page."""
    if not infos:
        return None
    labels = [f"{i.label}  ({i.status})" for i in infos]
    paths = [i.path for i in infos]
    wanted = st.session_state.get("selected_run")
    index = paths.index(wanted) if wanted in paths else 0
    choice = st.selectbox(label, range(len(infos)), index=index, format_func=lambda j: labels[j], key=key)
    info = infos[choice if choice is not None else 0]
    st.session_state["selected_run"] = info.path
    return info


def status_note(info: logic.RunInfo) -> None:
    """A warning for runs that did not finish: what happened, and how to resume."""
    if info.status == "finished":
        return
    msg = {"running": "This run is still running; its numbers appear when it finishes.",
           "interrupted": "This run was interrupted; `surrogate run` on the same case resumes it.",
           "failed": "This run failed.",
           "corrupted": "This run folder is damaged or half-written."}.get(info.status, f"Status: {info.status}.")
    st.warning(msg + (f"\n\n{info.error}" if info.error else ""))


# ------------------------------------------------------------------ charts
def loss_chart(curves: pd.DataFrame, color: str = "series", dash: str | None = None) -> alt.Chart:
    """Loss against epoch on a log axis (losses span decades)."""
    data = curves[curves["loss"] > 0]
    enc = {"x": alt.X("epoch:Q", title="epoch"),
           "y": alt.Y("loss:Q", scale=alt.Scale(type="log"), title="training loss"),
           "color": alt.Color(f"{color}:N"), "tooltip": list(curves.columns)}
    if dash:
        enc["strokeDash"] = alt.StrokeDash(f"{dash}:N")
    return alt.Chart(data).mark_line(point=True).encode(**enc).properties(height=320)


def metrics_section(path: str, key: str) -> None:
    """The main metrics table and, folded, every other number of the run."""
    metrics, why = run_metrics(path, logic.run_stamp(path))
    if metrics is None:
        st.info(why)
        return
    main, rest = logic.main_and_other_metrics(metrics)
    if main.empty and rest.empty:
        st.info("metrics.json has no rows.")
        return
    if not main.empty:
        st.dataframe(main, key=f"{key}_main")
    if not rest.empty:
        with st.expander(f"All other metrics ({len(rest)})"):
            st.dataframe(rest, hide_index=True, key=f"{key}_rest")


def figures_section(path: str) -> None:
    figs = logic.figures(path)
    if not figs:
        st.info("This run has no figures yet.")
        return
    cols = st.columns(2)
    for i, f in enumerate(figs):
        cols[i % 2].image(str(f), caption=f.stem.replace("_", " "))


def pick_method(info: logic.RunInfo, key: str, label: str = "Method", container=st, radio: bool = False,
                format_func=str) -> str | None:
    """One of the run's saved methods, its surrogate first chosen; None (with a message) before training.
    A choice remembered from another run that this run does not have is forgotten."""
    surrogate_name, methods = logic.saved_methods(info.path)
    if not methods:
        st.info(f"This run has no trained model to explore (status: {info.status}).")
        return None
    if st.session_state.get(key) not in methods:
        st.session_state.pop(key, None)
    index = methods.index(surrogate_name) if surrogate_name in methods else 0
    if radio:
        return container.radio(label, methods, index=index, format_func=format_func, horizontal=True, key=key)
    return container.selectbox(label, methods, index=index, format_func=format_func, key=key)


# ------------------------------------------------------------------ family pages
FIRST_CASE = {"lorenz96": "cases/lorenz96_mno.yaml", "pinn": "cases/pig_helmholtz.yaml", "mmgp": "cases/mmgp.yaml"}


def no_family_runs(family: str) -> None:
    case = FIRST_CASE.get(family)
    how = (f" Make one with\n\n```\nsurrogate run {case} --profile smoke\n```" if case
           else " This family is not part of the package yet.")
    st.info(f"No runs of this family yet.{how}")


def family_runs_or_stop(family: str, keep=None) -> list[logic.RunInfo]:
    """The page title, then the family's runs (those `keep` accepts); a message and the end of the
    page when the results folder is unusable or holds no such run."""
    st.title(logic.FAMILIES[family])
    res = results()
    problem = logic.results_problem(res)
    if problem:
        st.error(problem)
        st.stop()
    runs = [i for i in logic.family_runs(run_infos(res, logic.results_stamp(res)), family) if keep is None or keep(i)]
    if not runs:
        no_family_runs(family)
        st.stop()
    return runs


def family_page(family: str, extra=None) -> None:
    """A family page that shows its runs' numbers and figures; the family's code is imported only
    here, lazily, so a family being rewritten cannot break the rest of the app."""
    runs = family_runs_or_stop(family)
    trouble = logic.family_import_problem(family)
    if trouble:
        st.warning(trouble + " Saved numbers and figures are shown below; live exploration needs the family.")
    info = pick_run(runs, key=f"{family}_run")
    status_note(info)
    if info.headline_value is not None:
        st.metric(info.headline, f"{info.headline_value:.4g}")
    metrics_section(info.path, key=f"{family}_metrics")
    if extra is not None and not trouble:
        extra(info)
    with st.expander("predictions.nc"):
        table, why = logic.predictions_summary(info.path)
        st.dataframe(table, hide_index=True, key=f"{family}_pred") if why == "" else st.info(why)
    figures_section(info.path)

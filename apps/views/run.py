"""Run: the resolved case, metrics against baselines, learning curves, figures and log of one run."""
import streamlit as st
from views import _ui

from surrogate import app_logic as logic

st.title("Run")
infos = _ui.infos_or_stop()
info = _ui.pick_run(infos, key="run_select")

c = st.columns(4)
c[0].metric("status", info.status)
c[1].metric("family", info.family)
c[2].metric("profile", info.profile)
c[3].metric(info.headline or "headline", "-" if info.headline_value is None else f"{info.headline_value:.4g}")
st.caption(f"{info.path}  ·  started {info.started or '-'}")
_ui.status_note(info)

tab_m, tab_c, tab_f, tab_case, tab_log = st.tabs(["Metrics", "Learning curves", "Figures", "Case", "Log"])
with tab_m:
    _ui.metrics_section(info.path, key="run_metrics")
with tab_c:
    curves, why = _ui.run_curves(info.path, logic.run_stamp(info.path))
    if why:
        st.warning(why)
    elif curves.empty:
        st.info("No learning curves in this run (no model/training.json, or only closed-form fits).")
    else:
        st.altair_chart(_ui.loss_chart(curves), key="run_curves_chart")
with tab_f:
    _ui.figures_section(info.path)
with tab_case:
    text = logic.case_text(info.path)
    st.code(text, language="yaml") if text else st.info("This run has no case.yaml.")
with tab_log:
    log = logic.log_tail(info.path, 60)
    st.code(log or "(empty log)", language="text")

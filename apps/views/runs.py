"""Runs: every run in the results folder with its case, status, date and headline metric."""
import streamlit as st
from views import _ui

from surrogate import app_logic as logic

st.title("Runs")
infos = _ui.infos_or_stop()

counts = logic.status_counts(infos)
cols = st.columns(len(counts) + 1)
cols[0].metric("runs", len(infos))
for col, (status, n) in zip(cols[1:], sorted(counts.items())):
    col.metric(status, n)

families = sorted({i.family for i in infos})
f1, f2 = st.columns(2)
family = f1.selectbox("Family", ["all", *families], key="runs_family")
family = None if family == "all" else family
cases = sorted({i.case for i in infos if family is None or i.family == family})
case = f2.selectbox("Case", ["all", *cases], key="runs_case")
case = None if case == "all" else case

table = logic.runs_frame(infos, family, case)
st.dataframe(table, hide_index=True, key="runs_table", column_config={
    "value": st.column_config.NumberColumn("value", format="%.4g")})

shown = [i for i in infos if (family is None or i.family == family) and (case is None or i.case == case)]
if shown:
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    with c1:
        info = _ui.pick_run(shown, key="runs_open", label="Open a run")
    if c2.button("Open", key="runs_open_button"):
        st.session_state["selected_run"] = info.path
        st.switch_page("views/run.py")

"""Compare: two or more runs side by side, metrics table and overlaid learning curves."""
import streamlit as st
from views import _ui

from surrogate import app_logic as logic

st.title("Compare")
infos = _ui.infos_or_stop()
by_label = {i.label: i for i in infos}
finished = [i.label for i in infos if i.status == "finished"]
chosen = st.multiselect("Runs", list(by_label), default=(finished or list(by_label))[:2], key="compare_runs")
c1, c2 = st.columns(2)
all_methods = c1.checkbox("Every method (not only each run's surrogate)", value=False, key="compare_all_methods")
main_only = c2.checkbox("Main metrics only", value=True, key="compare_main_only")

if len(chosen) < 2:
    st.info("Pick two or more runs.")
    st.stop()

paths = tuple(by_label[c].path for c in chosen)
stamps = tuple(logic.run_stamp(p) for p in paths)
table = _ui.compare_table(paths, stamps, all_methods, main_only)
if table.empty:
    st.info("None of these runs has metrics yet.")
else:
    st.dataframe(table, key="compare_table")
missing = [by_label[c].label for c in chosen if by_label[c].status != "finished"]
if missing:
    st.warning("Not finished, so possibly without numbers: " + ", ".join(missing))

st.subheader("Learning curves")
curves = _ui.compare_curves(paths, stamps)
if curves.empty:
    st.info("No learning curves in these runs.")
else:
    st.altair_chart(_ui.loss_chart(curves, color="run", dash="series"), key="compare_curves_chart")

"""Dragonfly: a held-out scenario's port load on the topology over time, and the runtime forecasts
of every method against the simulated runtime."""
import altair as alt
import streamlit as st
from views import _ui

from surrogate import app_dragonfly
from surrogate import app_logic as logic

runs = _ui.family_runs_or_stop("dragonfly")


@st.cache_data(show_spinner=False, max_entries=16)
def scenario_list(path: str, stamp: float):
    return app_dragonfly.scenarios(path)


@st.cache_data(show_spinner="Reading the scenario...", max_entries=8)
def scenario(path: str, stamp: float, name: str):
    return app_dragonfly.load_scenario(path, name)


@st.cache_data(show_spinner=False, max_entries=64)
def topology_png(path: str, stamp: float, name: str, window: int):
    return app_dragonfly.topology_figure(scenario(path, stamp, name), window)


@st.cache_data(show_spinner=False, max_entries=32)
def forecast_table(path: str, stamp: float, split: str, index: int):
    return app_dragonfly.forecasts(path, split, index)


info = _ui.pick_run(runs, key="df_run")
_ui.status_note(info)
stamp = logic.run_stamp(info.path)
options = scenario_list(info.path, stamp)
if not options:
    st.info("This run has no held-out scenarios in data/ (its solver stage did not finish).")
    _ui.metrics_section(info.path, key="df_metrics")
    st.stop()
chosen = st.selectbox("Held-out scenario", options, format_func=lambda o: o["label"], key="df_scenario")
try:
    ds = scenario(info.path, stamp, chosen["name"])
except Exception as err:  # a damaged file: say so, keep the app alive
    st.error(f"Could not read {chosen['name']}: {type(err).__name__}: {err}")
    st.stop()

n_windows = int(ds.sizes["window"])
window = st.slider("Time window", 0, n_windows - 1, min(n_windows - 1, n_windows // 2), key="df_window")
left, right = st.columns([2, 3])
with left:
    st.image(topology_png(info.path, stamp, chosen["name"], int(window)))
with right:
    st.markdown("**Load per router over time** (bytes / µs)")
    heat = alt.Chart(app_dragonfly.load_frame(ds)).mark_rect().encode(
        x=alt.X("time_us:Q", bin=alt.Bin(maxbins=80), title="time (µs)"), y=alt.Y("router:O", title="router"),
        color=alt.Color("mean(load):Q", title="load"))
    st.altair_chart(heat, width="stretch")

frame, why = forecast_table(info.path, stamp, chosen["split"], chosen["index"])
if frame is None:
    st.info(why)
    st.stop()
methods = list(dict.fromkeys(frame["method"]))
shown = st.multiselect("Methods", methods, default=methods[:1], key="df_methods")
picked = frame[frame["method"].isin(shown)]
base = alt.Chart(picked).encode(x=alt.X("iteration:Q", title="forecast iteration"))
band = base.mark_area(opacity=0.2).encode(y=alt.Y("low80:Q", title="runtime (µs)"), y2="high80:Q", color="method:N")
median = base.mark_line(point=True).encode(y="median:Q", color="method:N")
truth = alt.Chart(frame.drop_duplicates("iteration")).mark_line(color="black", strokeDash=[4, 3]).encode(
    x="iteration:Q", y="simulated:Q")
st.markdown("**Next-iteration runtime: forecast (median, 80% interval) against the simulator** (dashed)")
st.altair_chart(band + median + truth, width="stretch")
st.dataframe(app_dragonfly.scenario_errors(frame), hide_index=True, key="df_errors")

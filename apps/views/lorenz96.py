"""Lorenz96: pick an initial state and closures, roll them out live against the two-scale truth."""
import numpy as np
import streamlit as st
from views import _ui

from surrogate import app_logic as logic

runs = _ui.family_runs_or_stop("lorenz96", keep=lambda i: bool(logic.saved_methods(i.path)[1]))


@st.cache_data(show_spinner="Rolling out...", max_entries=64)
def rollout(path: str, stamp: float, source: str, seed: int, index: int, mtu: float, methods: tuple[str, ...]):
    """Truth and each closure's free run from the same state (a few MTU, so it stays interactive)."""
    time_, truth, history = logic.lorenz96_truth(path, source, seed=seed, index=index, mtu=mtu, with_history=True)
    models = {m: _ui.loaded_model(path, stamp, m) for m in methods}
    return time_, truth, logic.lorenz96_rollouts(models, truth[0], len(truth) - 1, history)


info = _ui.pick_run(runs, key="l96_run")
_ui.status_note(info)
surrogate_name, methods = logic.saved_methods(info.path)
held_out, held_why = logic.lorenz96_held_out(info.path)
sources = (["held-out"] if held_out is not None else []) + ["random"]
labels = {"held-out": "held-out state (data/test.nc)", "random": "random state (seed)"}

c1, c2, c3 = st.columns(3)
source = c1.radio("Initial state", sources, format_func=labels.get, key="l96_source")
if source == "held-out":
    n = len(held_out)
    index = int(c2.number_input(f"Held-out trajectory (0-{n - 1})", min_value=0, max_value=n - 1, value=0,
                                step=1, key="l96_index"))
    seed = 0
else:
    seed = int(c2.number_input("Seed", min_value=0, max_value=1_000_000, value=0, step=1, key="l96_seed"))
    index = 0
    if held_out is None:
        c2.caption(held_why)
mtu = c3.slider("Horizon (MTU)", 0.1, logic.LORENZ96_MAX_MTU, 1.0, 0.1, key="l96_mtu")
default = [m for m in (surrogate_name, "null") if m in methods]
chosen = st.multiselect("Closures", methods, default=default, key="l96_methods")

bad = logic.check_in_range(mtu, 0.1, logic.LORENZ96_MAX_MTU, "Horizon")
if source == "held-out":
    bad = bad or logic.check_in_range(index, 0, len(held_out) - 1, "Held-out trajectory")
if bad:
    st.error(bad)
    st.stop()
if not chosen:
    st.info("Pick at least one closure.")
    st.stop()

try:
    time_, truth, preds = rollout(info.path, logic.run_stamp(info.path), source, seed, index, float(mtu),
                                  tuple(chosen))
except Exception as err:  # damaged weights or data: say so, keep the app alive
    st.error(f"Could not roll out this run: {type(err).__name__}: {err}")
    st.stop()

K = truth.shape[1]
site = int(st.number_input(f"Site k (0-{K - 1})", min_value=0, max_value=K - 1, value=0, step=1, key="l96_site"))
x_frame, err_frame = logic.lorenz96_frames(time_, truth, preds, site)
left, right = st.columns(2)
with left:
    st.markdown(f"**X_{site} over time**")
    st.line_chart(x_frame, x_label="time (MTU)", y_label=f"X_{site}")
with right:
    st.markdown("**Error vs time** (RMSE over the ring)")
    st.line_chart(err_frame, x_label="time (MTU)", y_label="RMSE of X")
missing = [m for m in chosen if m not in preds]
if missing:
    st.info("Not shown (a closure with memory needs the states before the initial one, which this run's "
            "held-out data do not store): " + ", ".join(missing))
blown = [m for m, p in preds.items() if not np.isfinite(p).all()]
if blown:
    st.warning("Blew up (non-finite values) during the rollout: " + ", ".join(blown))
final = err_frame.iloc[-1].sort_values()
st.caption(f"Error at {time_[-1]:.2f} MTU: " + ", ".join(f"{m} {v:.3g}" for m, v in final.items()))

"""PROSE: pick an ODE family, its parameters and an initial state; see the forecast and the decoded
equation beside the truth."""
import altair as alt
import streamlit as st
from views import _ui

from surrogate import app_logic as logic
from surrogate import app_prose

runs = _ui.family_runs_or_stop("prose", keep=lambda i: i.status == "finished")
trouble = logic.family_import_problem("prose")
if trouble:
    st.warning(trouble)
    st.stop()


@st.cache_data(show_spinner="Simulating and forecasting...", max_entries=64)
def explore(path: str, stamp: float, method: str, family: str, params: tuple, u0: tuple, noise: float, seed: int,
            with_skeleton: bool):
    return app_prose.explore(_ui.loaded_model(path, stamp, method), family, list(params), list(u0), noise, seed,
                             with_skeleton)


info = _ui.pick_run(runs, key="prose_run")
_ui.status_note(info)
method = _ui.pick_method(info, "prose_method", label="Model")
if method is None:
    st.stop()

families = app_prose.family_choices()
family = st.selectbox("ODE family", list(families), format_func=lambda f: families[f]["title"], key="prose_family")
spec = families[family]
params, bad = [], ""
cols = st.columns(max(1, min(4, len(spec["parameters"]))))
for j, (name, nominal) in enumerate(zip(spec["parameters"], spec["nominal"])):
    lo, hi = app_prose.parameter_range(nominal)
    value = cols[j % len(cols)].number_input(f"{name} (nominal {nominal:g})", value=float(nominal), format="%.4g",
                                             key=f"prose_{family}_{name}")
    bad = bad or logic.check_in_range(value, lo, hi, name)
    params.append(float(value))
c = st.columns(3)
u0 = [float(c[i].number_input(f"u_{i}(0)", value=[1.0, 0.5, -0.5][i], step=0.1, key=f"prose_u0_{i}"))
      for i in range(3)]
for i, v in enumerate(u0):
    bad = bad or logic.check_in_range(v, -2.0, 2.0, f"u_{i}(0)")
c1, c2, c3 = st.columns(3)
noise = c1.slider("Noise (share of the trajectory's L2 norm)", 0.0, 0.1, 0.02, 0.01, key="prose_noise")
seed = int(c2.number_input("Noise seed", min_value=0, max_value=1_000_000, value=0, key="prose_seed"))
with_skeleton = c3.checkbox("Give the family's skeleton as the symbolic guess", value=True, key="prose_skeleton")
if bad:
    st.error(bad + " (parameters: within 20% of nominal; initial states: in [-2, 2], as in training)")
    st.stop()

try:
    ex = explore(info.path, logic.run_stamp(info.path), method, family, tuple(params), tuple(u0), float(noise),
                 seed, with_skeleton)
except ValueError as err:
    st.warning(str(err))
    st.stop()
except Exception as err:  # damaged weights: say so, keep the app alive
    st.error(f"Could not run this model: {type(err).__name__}: {err}")
    st.stop()

m1, m2 = st.columns(2)
m1.metric("relative L2 on (2, 4]", f"{ex.errors['rel_l2_(2,4]']:.3g}")
m2.metric("relative L2 on (4, 6]", f"{ex.errors['rel_l2_(4,6]']:.3g}")
frame = app_prose.trajectory_frame(ex)
chart = alt.Chart(frame).mark_line(point=False).encode(
    x=alt.X("time:Q", title="t"), y=alt.Y("value:Q", title="u"), color="series:N", strokeDash="series:N",
).properties(height=180).facet(row="component:N")
st.altair_chart(chart, width="stretch")
left, right = st.columns(2)
with left:
    st.markdown("**True equation**")
    st.latex(app_prose.latex_system(ex.true_equation))
with right:
    st.markdown(f"**Decoded by {method}**")
    decoded = app_prose.latex_system(ex.decoded_equation)
    st.latex(decoded) if decoded else st.info("This model writes no equations (data-only).")
if ex.message:
    st.warning(ex.message)

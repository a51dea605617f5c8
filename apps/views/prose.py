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
            with_skeleton: bool, refine: bool):
    return app_prose.explore(_ui.loaded_model(path, stamp, method), family, list(params), list(u0), noise, seed,
                             with_skeleton, refine)


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
c1, c2, c3, c4 = st.columns(4)
noise = c1.slider("Noise (share of the trajectory's L2 norm)", 0.0, 0.1, 0.02, 0.01, key="prose_noise")
seed = int(c2.number_input("Noise seed", min_value=0, max_value=1_000_000, value=0, key="prose_seed"))
with_skeleton = c3.checkbox("Give the family's skeleton as the symbolic guess", value=True, key="prose_skeleton")
refine = c4.checkbox("Re-fit the decoded numbers to the observations and forecast with the equation", value=True,
                     key="prose_refine", help="predict(..., refine=True, trajectory='equation'); fused models only")
if bad:
    st.error(bad + " (parameters: within 20% of nominal; initial states: in [-2, 2], as in training)")
    st.stop()

try:
    ex = explore(info.path, logic.run_stamp(info.path), method, family, tuple(params), tuple(u0), float(noise),
                 seed, with_skeleton, refine)
except ValueError as err:
    st.warning(str(err))
    st.stop()
except Exception as err:  # damaged weights: say so, keep the app alive
    st.error(f"Could not run this model: {type(err).__name__}: {err}")
    st.stop()

metrics = [("relative L2 on (2, 4]", "rel_l2_(2,4]"), ("relative L2 on (4, 6]", "rel_l2_(4,6]"),
           ("refined equation, (2, 4]", "refined_rel_l2_(2,4]"), ("refined equation, (4, 6]", "refined_rel_l2_(4,6]")]
metrics = [(label, ex.errors[key]) for label, key in metrics if key in ex.errors]
for column, (label, value) in zip(st.columns(len(metrics)), metrics):
    column.metric(label, f"{value:.3g}" if value == value else "diverged")
frame = app_prose.trajectory_frame(ex)
chart = alt.Chart(frame).mark_line(point=False).encode(
    x=alt.X("time:Q", title="t"), y=alt.Y("value:Q", title="u"), color="series:N", strokeDash="series:N",
).properties(height=180).facet(row="component:N")
st.altair_chart(chart, width="stretch")
columns = st.columns(3 if ex.refined_equation is not None else 2)
with columns[0]:
    st.markdown("**True equation**")
    st.latex(app_prose.latex_system(ex.true_equation))
with columns[1]:
    st.markdown(f"**Decoded by {method}**")
    decoded = app_prose.latex_system(ex.decoded_equation)
    st.latex(decoded) if decoded else st.info("This model writes no equations (data-only).")
if ex.refined_equation is not None:
    with columns[2]:
        st.markdown("**Decoded, numbers re-fitted to the observations**")
        st.latex(app_prose.latex_system(ex.refined_equation))
if ex.message:
    st.warning(ex.message)

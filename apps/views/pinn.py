"""PINN: a trained field beside its reference, the error map and PIG's Gaussian centres, with a time
slider for time-dependent PDEs; the run's numbers and figures below."""
import streamlit as st
from views import _ui

from surrogate import app_logic as logic
from surrogate import app_pinn


@st.cache_data(show_spinner=False, max_entries=32)
def reference(path: str, stamp: float):
    return app_pinn.read_reference(path)


@st.cache_data(show_spinner="Evaluating the field...", max_entries=128)
def field_picture(path: str, stamp: float, method: str, time_index: int | None):
    """(PNG of prediction / reference / |error|, the view's numbers); only the chosen slice is evaluated."""
    ref, why = reference(path, stamp)
    if ref is None:
        raise ValueError(why)
    model = _ui.loaded_model(path, stamp, method)
    view = app_pinn.field_view(model, ref, time_index)
    found = app_pinn.gaussian_centres(model, view)
    centres, total = found if found is not None else (None, 0)
    png = app_pinn.field_figure(view, centres, method=app_pinn.method_label(method))
    shown = None if centres is None else (len(centres), total)
    return png, view.rel_l2, view.time, view.profile, shown


def forget_stale(key: str, options: list) -> None:
    """Drop a remembered choice that the newly picked run does not offer."""
    if key in st.session_state and st.session_state[key] not in options:
        del st.session_state[key]


def explore(info: logic.RunInfo) -> None:
    st.subheader("Field, reference and error")
    if not logic.saved_methods(info.path)[1]:
        st.info(f"This run has no trained model to explore (status: {info.status}).")
        return
    stamp = logic.run_stamp(info.path)
    ref, why = reference(info.path, stamp)
    if ref is None:
        st.info(why)
        return
    left, right = st.columns(2)
    method = _ui.pick_method(info, "pinn_method", container=left, radio=True, format_func=app_pinn.method_label)
    times = app_pinn.time_values(ref)
    time_index = None
    if times is not None:
        forget_stale("pinn_time", list(range(len(times))))
        time_index = right.select_slider("Time t", options=list(range(len(times))), value=0,
                                         format_func=lambda i: f"{times[i]:.4g}", key="pinn_time")
    try:
        png, rel_l2, time, profile, shown = field_picture(info.path, stamp, method, time_index)
    except Exception as err:  # a model that cannot load or does not fit its grid: say so, keep the page
        st.error(f"Could not evaluate {app_pinn.method_label(method)} of this run: {type(err).__name__}: {err}")
        return
    where = f"at t = {time:.4g}" if time is not None else "on the test grid"
    st.metric(f"Relative L2 error {where}", f"{rel_l2:.3e}")
    st.image(png)
    if shown is not None:
        n, total = shown
        reach = " (those whose Gaussian reaches this time)" if n != total else ""
        st.caption(f"x: {n} of {total} Gaussian centres{reach}.")
    if profile is not None:
        st.markdown(f"**u({profile.index.name}) at t = {time:.4g}**")
        st.line_chart(profile, x_label=profile.index.name, y_label="u")


_ui.family_page("pinn", extra=explore)

"""MMGP: pick a test shape or upload a mesh, set load, shear and Young's modulus within the training
range, and see the predicted field with its standard deviation (and the solver's field on test shapes);
the run's numbers and figures below."""
import os
import sys

import streamlit as st
import streamlit.components.v1 as components
from views import _ui

from surrogate import app_logic as logic
from surrogate import app_mmgp

UNITS = {"load": "MPa", "shear": "MPa", "young": "MPa"}
SOURCES = {"test": "test shape", "upload": "uploaded mesh"}


# ------------------------------------------------------------------ cached work
@st.cache_data(show_spinner=False, max_entries=64)
def test_shape(path: str, stamp: float, name: str):
    return app_mmgp.read_test_shape(path, name)


@st.cache_data(show_spinner=False, max_entries=16)
def uploaded_mesh(name: str, data: bytes):
    """(summary, None, why) for a file that is no mesh, else (summary, (nodes, triangles) or None, why)."""
    summary, why = logic.check_mesh_upload(name, data)
    if why:
        return None, None, why
    mesh, why = app_mmgp.mesh_from_upload(name, data)
    return summary, mesh, why


@st.cache_data(show_spinner="Predicting...", max_entries=64)
def prediction(path: str, stamp: float, method: str, shape: str, upload: tuple[str, bytes] | None,
               inputs: tuple[float, ...]) -> app_mmgp.Prediction:
    """The model's fields on a test shape (`shape`) or on an uploaded mesh (`upload` = (name, bytes))."""
    model = _ui.loaded_model(path, stamp, method)
    shape_parameters = None
    if upload is None:
        sample = test_shape(path, stamp, shape)
        nodes, triangles, shape_parameters = sample.nodes, sample.triangles, sample.shape_parameters
    else:
        _, (nodes, triangles), _ = uploaded_mesh(*upload)
    if not app_mmgp.needs_shape_parameters(path, method):
        shape_parameters = None
    return app_mmgp.predict(model, nodes, triangles, dict(zip(app_mmgp.SCALARS, inputs)), shape_parameters)


@st.cache_data(show_spinner="Drawing...", max_entries=64)
def fields_png(path: str, stamp: float, method: str, shape: str, upload, inputs, field: str, compare: bool) -> bytes:
    pred = prediction(path, stamp, method, shape, upload, inputs)
    sample = test_shape(path, stamp, shape) if compare else None
    panels = app_mmgp.field_panels(pred, field, sample)
    return app_mmgp.tripcolor_figure(pred.nodes, pred.triangles, panels, title=app_mmgp.FIELD_LABELS.get(field, field))


# ------------------------------------------------------------------ drawing
def viewer_3d() -> bool:
    """pyvista's vtk.js export (trame-pyvista) when it is installed and not turned off
    (SURROGATE_APP_3D=0); never under AppTest, which renders no HTML components."""
    if os.environ.get("SURROGATE_APP_3D", "1") == "0" or "streamlit.testing.v1" in sys.modules:
        return False
    try:
        import trame_pyvista  # noqa: F401
    except ImportError:
        return False
    return True


@st.cache_data(show_spinner="Building the 3D view...", max_entries=32)
def scenes(path: str, stamp: float, method: str, shape: str, upload, inputs, field: str, compare: bool,
           relief: float) -> list[str]:
    pred = prediction(path, stamp, method, shape, upload, inputs)
    sample = test_shape(path, stamp, shape) if compare else None
    return app_mmgp.scene_html(pred.nodes, pred.triangles, app_mmgp.field_panels(pred, field, sample), relief)


def show_fields(panels: list[app_mmgp.Panel], args: tuple) -> None:
    """The one place that draws fields: interactive 3D scenes when available, else the 2D picture.
    `args` = (path, stamp, method, shape, upload, inputs, field, compare) picks the cached drawing."""
    if viewer_3d() and st.toggle("3D view (drag to rotate, scroll to zoom)", value=True, key="mmgp_3d"):
        relief = 0.3 if st.toggle("Field as relief", value=True, key="mmgp_relief") else 0.0
        try:
            pages = scenes(*args, relief)
        except Exception as err:  # VTK cannot render here, or the export failed: fall back
            st.caption(f"3D view unavailable ({type(err).__name__}: {err}); showing the 2D view.")
        else:
            for col, panel, page in zip(st.columns(len(panels)), panels, pages):
                with col:
                    st.markdown(f"**{panel.title}**")
                    components.html(page, height=490)
            return
    st.image(fields_png(*args))


# ------------------------------------------------------------------ the page
def reset_inputs(owner: str, defaults: dict[str, float]) -> None:
    """Start from the shape's own scalars whenever another shape (or run) is picked."""
    # widget values vanish from the session when a run without inputs was shown in between
    missing = any(f"mmgp_{k}" not in st.session_state for k in defaults)
    if missing or st.session_state.get("mmgp_inputs_for") != owner:
        st.session_state["mmgp_inputs_for"] = owner
        for k, v in defaults.items():
            st.session_state[f"mmgp_{k}"] = float(v)


def scalar_inputs(ranges: dict[str, tuple[float, float]]) -> tuple[dict[str, float], list[str]]:
    """Three number inputs, deliberately unclamped so a typed value out of range gets a message."""
    values = {}
    for col, k in zip(st.columns(3), app_mmgp.SCALARS):
        lo, hi = ranges[k]
        values[k] = col.number_input(f"{k} ({UNITS[k]}), trained on {lo:g} to {hi:g}", step=(hi - lo) / 20,
                                     format="%.4g", key=f"mmgp_{k}")
    return values, app_mmgp.check_scalars(values, ranges)


def pick_shape(info: logic.RunInfo, stamp: float, ranges: dict[str, tuple[float, float]]):
    """(test shape name, upload (name, bytes) or None, the shape's own scalars or None), or None to stop."""
    shapes = app_mmgp.test_shapes(info.path)
    sources = (["test"] if shapes else []) + ["upload"]
    if st.session_state.get("mmgp_source") not in sources:
        st.session_state.pop("mmgp_source", None)
    source = st.radio("Shape", sources, format_func=SOURCES.get, horizontal=True, key="mmgp_source")
    if source == "test":
        if st.session_state.get("mmgp_shape") not in shapes:
            st.session_state.pop("mmgp_shape", None)
        name = st.selectbox(f"Test shape ({len(shapes)})", shapes, key="mmgp_shape")
        try:
            sample = test_shape(info.path, stamp, name)
        except Exception as err:  # a truncated sample file
            st.error(f"Could not read {name}: {type(err).__name__}: {err}")
            return None
        return name, None, dict(zip(app_mmgp.SCALARS, sample.inputs))
    if not shapes:
        st.caption("This run has no test shapes in data/; upload a mesh.")
    f = st.file_uploader("Upload a 2D triangle mesh", type=[s.lstrip(".") for s in logic.MESH_SUFFIXES],
                         key="mmgp_upload")
    if f is None:
        st.info("Upload a planar triangle mesh (.vtu, .msh, .xdmf, ...) of a specimen like the training ones.")
        return None
    summary, mesh, why = uploaded_mesh(f.name, f.getvalue())
    if summary is not None:
        st.success(f"{f.name}: {summary['points']} points, {summary['cells']} cells "
                   f"({', '.join(summary['cell_types'])})")
    if why:
        st.error(why)
        return None
    mid = {k: 0.5 * (lo + hi) for k, (lo, hi) in ranges.items()}
    return "", (f.name, f.getvalue()), mid


def explore(info: logic.RunInfo) -> None:
    st.subheader("Predict on a shape")
    method = _ui.pick_method(info, "mmgp_method")
    if method is None:
        return
    ranges, why = app_mmgp.scalar_ranges(info.path)
    if why:
        st.info(why)
        return
    stamp = logic.run_stamp(info.path)
    picked = pick_shape(info, stamp, ranges)
    if picked is None:
        return
    shape, upload, own = picked
    if upload is not None and app_mmgp.needs_shape_parameters(info.path, method):
        st.error(f"{method} reads the generator's shape parameters, which an uploaded mesh does not have; "
                 "pick a test shape or another method.")
        return
    reset_inputs(f"{info.path}|{shape}|{upload[0] if upload else ''}", own)
    inputs, problems = scalar_inputs(ranges)
    if problems:
        st.error("Out of the training range, so nothing is predicted:\n\n- " + "\n- ".join(problems))
        return
    key = tuple(float(inputs[k]) for k in app_mmgp.SCALARS)
    try:
        pred = prediction(info.path, stamp, method, shape, upload, key)
    except Exception as err:  # a model that cannot load, a mesh the morphing rejects: a message
        st.error(f"Could not predict with {method}: {type(err).__name__}: {err}")
        return
    show_prediction(info, stamp, method, shape, upload, key, pred, own)


def show_prediction(info, stamp, method, shape, upload, key, pred, own) -> None:
    for w in pred.warnings:
        st.warning(w)
    sample = test_shape(info.path, stamp, shape) if upload is None else None
    compare = sample is not None and app_mmgp.same_inputs(dict(zip(app_mmgp.SCALARS, key)), sample)
    if sample is not None and not compare:
        st.caption("The solver's field is for this shape's own scalars ("
                   + ", ".join(f"{k} = {v:.4g}" for k, v in own.items()) + "); set them to compare.")
    fields = list(pred.fields)
    field = st.selectbox("Field", fields, index=fields.index("von_mises") if "von_mises" in fields else 0,
                         format_func=lambda f: app_mmgp.FIELD_LABELS.get(f, f), key="mmgp_field")
    if pred.fields[field][1] is None:
        st.caption(f"{method} gives no standard deviation.")
    panels = app_mmgp.field_panels(pred, field, sample if compare else None)
    args = (info.path, stamp, method, shape, upload, key, field, compare)
    show_fields(panels, args)
    if pred.shape_distance is not None:
        st.caption(f"Distance to the nearest training shape: {pred.shape_distance:.3g} "
                   f"(limit {pred.shape_distance_limit:.3g}).")
    left, right = st.columns(2)
    with left:
        st.markdown("**Scalar outputs**")
        st.dataframe(app_mmgp.scalar_table(pred, sample if compare else None), hide_index=True,
                     key="mmgp_scalars_table")
    if compare:
        with right:
            st.markdown("**Error against the solver on this shape**")
            st.dataframe(app_mmgp.field_errors(pred, sample), hide_index=True, key="mmgp_errors_table")


_ui.family_page("mmgp", extra=explore)

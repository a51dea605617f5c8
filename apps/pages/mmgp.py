"""MMGP: runs of the mesh-morphing Gaussian-process family, and a mesh upload check."""
import streamlit as st
from pages import _ui

from surrogate import app_logic as logic


def upload(info) -> None:
    """Check an uploaded mesh before anything uses it: a file that is not a mesh gets a message."""
    f = st.file_uploader("Upload a mesh", type=[s.lstrip(".") for s in logic.MESH_SUFFIXES], key="mmgp_upload")
    if f is None:
        return
    summary, why = logic.check_mesh_upload(f.name, f.getvalue())
    if why:
        st.error(why)
    else:
        st.success(f"{f.name}: {summary['points']} points, {summary['cells']} cells "
                   f"({', '.join(summary['cell_types'])})")


_ui.family_page("mmgp", extra=upload)

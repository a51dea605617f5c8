"""surrogate explorer: browse runs, compare them, explore trained surrogates.

Start it with `surrogate app` (or `make app`); the results folder comes from `surrogate --results R
app`, $SURROGATE_RESULTS or ./results, and can be changed in the sidebar.
"""
import streamlit as st
from views._ui import results_sidebar

st.set_page_config(page_title="surrogate explorer", layout="wide")
results_sidebar()

nav = st.navigation({
    "Runs": [
        st.Page("views/runs.py", title="Runs", url_path="runs", default=True),
        st.Page("views/run.py", title="Run", url_path="run"),
        st.Page("views/compare.py", title="Compare", url_path="compare"),
        st.Page("views/new_run.py", title="New run", url_path="new_run"),
    ],
    "Families": [
        st.Page("views/lorenz96.py", title="Lorenz96", url_path="lorenz96"),
        st.Page("views/pinn.py", title="PINN", url_path="pinn"),
        st.Page("views/mmgp.py", title="MMGP", url_path="mmgp"),
        st.Page("views/prose.py", title="PROSE", url_path="prose"),
        st.Page("views/dragonfly.py", title="Dragonfly", url_path="dragonfly"),
    ],
})
nav.run()

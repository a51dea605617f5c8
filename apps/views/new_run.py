"""New run: start `surrogate run` in a background process and follow its progress.

Training never happens in the app's process; the page only starts the subprocess and polls the
console file and meta.json it writes.
"""
from pathlib import Path

import streamlit as st
from views import _ui

from surrogate import app_logic as logic

st.title("New run")
res = _ui.results()
cases_dir = next((d for d in (Path.cwd() / "cases", _ui.APP_DIR.parent / "cases") if d.is_dir()), None)
cases = logic.list_cases(cases_dir) if cases_dir else []
if cases:
    names = [c.stem for c in cases]
    case = st.selectbox("Case", names, key="newrun_case")
    case_file = cases[names.index(case)]
else:  # an installed app run from a folder without cases/: ask for the file
    typed = st.text_input("Case file", key="newrun_case_path", placeholder="path/to/case.yaml").strip()
    if not typed:
        st.info("No ./cases folder here; give the path of a case file.")
        st.stop()
    case_file, case = Path(typed), Path(typed).stem
    if not logic.case_profiles(case_file):
        st.error(f"{typed} is not a readable case file.")
        st.stop()
profiles = logic.case_profiles(case_file) or ["default"]
profile = st.selectbox("Profile", profiles, index=profiles.index("smoke") if "smoke" in profiles else 0,
                       key="newrun_profile")
text = st.text_input("Overrides (key=value, space separated)", key="newrun_overrides",
                     placeholder="train.epochs=2")
overrides, bad = logic.parse_overrides(text)
if bad:
    st.error(bad)
if st.button("Start run", key="newrun_start", disabled=bool(bad)):
    try:
        job = logic.start_run(case_file, res, profile, overrides)
        st.success(f"Started {case} ({profile}) as process {job.pid}.")
    except (OSError, ValueError) as err:
        st.error(f"Could not start the run: {err}")


@st.fragment(run_every=2)
def progress_panel() -> None:
    """Reruns alone every 2 s so the rest of the page stays still while a job runs."""
    jobs = logic.list_jobs(res)[:5] if not logic.results_problem(res) else []
    if not jobs:
        st.caption("No runs started from the app yet.")
        return
    for job in jobs:
        p = logic.job_progress(job)
        with st.container(border=True):
            st.markdown(f"**{job.case}** ({job.profile or 'default'}) · {p['state']} · {p['elapsed_s']:.0f} s"
                        + (f" · `{p['run_dir']}`" if p["run_dir"] else ""))
            st.progress(min(1.0, p["fraction"]), text="stages done: " + (", ".join(p["stages_done"]) or "none"))
            if p["state"] == "failed" and p["error"]:
                st.error(p["error"])
            if p["alive"] and st.button("Stop", key=f"newrun_stop_{job.id}"):
                logic.stop_job(job)
            st.code(p["console"] or "(no output yet)", language="text")


st.subheader("Runs started from the app")
progress_panel()

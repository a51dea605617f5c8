"""The explorer's PINN and MMGP pages: their logic on small hand-built models, and the pages under
Streamlit's AppTest with one smoke run per family (Klein-Gordon: two space dimensions and time; the
MMGP smoke run of conftest), a run whose weights are damaged and a failed run."""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from surrogate import app_mmgp, app_pinn
from surrogate.pinn.field import FieldModel
from surrogate.pinn.pdes import make_problem
from surrogate.pinn.pig import PIG

ROOT = Path(__file__).resolve().parents[1]
ENTRY = str(ROOT / "apps" / "explorer.py")
TARGET_S = 3.0


# ------------------------------------------------------------------ hand-built PINN models
class Exact(torch.nn.Module):
    """The problem's exact solution as a module, so the error of a FieldModel around it is zero."""

    def __init__(self, problem):
        super().__init__()
        self.problem = problem
        self.unused = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))

    def forward(self, x):
        return self.problem.exact(x)


def field_model(name: str, exact: bool = False) -> FieldModel:
    problem = make_problem(name)
    module = Exact(problem) if exact else PIG(problem.lower, problem.upper, n_gaussians=6, channels=2, seed=1)
    return FieldModel(module, "pig", {"name": name}, {})


def reference_of(name: str, sizes: dict[str, int]):
    import xarray as xr

    from surrogate.pinn.pdes import cf_order

    problem = make_problem(name)
    grid = problem.test_grid(sizes)
    dims = cf_order(problem.coords)
    coords = {c: (c, grid[c], {"long_name": f"{c} axis"}) for c in dims}
    return xr.Dataset({"u": (dims, problem.reference(grid))}, coords=coords)


def test_steady_field_view_of_the_exact_solution_has_no_error():
    view = app_pinn.field_view(field_model("helmholtz", exact=True), reference_of("helmholtz", {"x": 9, "y": 7}))
    assert (view.h, view.v, view.time, view.profile) == ("x", "y", None, None)
    assert view.prediction.shape == view.reference.shape == (7, 9)
    assert view.rel_l2 == pytest.approx(0, abs=1e-12) and np.abs(view.error).max() < 1e-12
    assert view.label("x") == "x axis"


def test_time_slice_of_two_space_dimensions_and_the_centres_that_reach_it():
    model, ref = field_model("klein_gordon"), reference_of("klein_gordon", {"x": 5, "y": 6, "t": 4})
    view = app_pinn.field_view(model, ref, time_index=2)
    assert (view.h, view.v) == ("x", "y") and view.time == pytest.approx(float(ref.t[2]))
    assert view.prediction.shape == (6, 5)
    u = model(np.column_stack([np.full(6, float(ref.x[1])), ref.y.values, np.full(6, view.time)]))
    np.testing.assert_allclose(view.prediction[:, 1], u)  # column = x, row = y
    expected = np.linalg.norm(view.prediction - view.reference) / np.linalg.norm(view.reference)
    assert view.rel_l2 == pytest.approx(expected)
    centres, total = app_pinn.gaussian_centres(model, view)
    mu = model.module.centres().detach().numpy().reshape(-1, 3)
    sigma_t = np.abs(model.module.sigma.detach().numpy().reshape(-1, 3)[:, 2]) / float(model.module.scale[2])
    assert total == 12 and len(centres) == int(np.sum(np.abs(mu[:, 2] - view.time) <= 2 * sigma_t))
    assert app_pinn.field_view(model, ref, time_index=99).time == pytest.approx(float(ref.t[-1]))  # clamped


def test_one_space_dimension_shows_the_x_t_plane_and_the_profile():
    model, ref = field_model("burgers"), reference_of("burgers", {"x": 12, "t": 5})
    view = app_pinn.field_view(model, ref, time_index=3)
    assert (view.h, view.v) == ("x", "t") and view.prediction.shape == (5, 12)
    assert list(view.profile.columns) == ["prediction", "reference"] and len(view.profile) == 12
    np.testing.assert_allclose(view.profile["prediction"], view.prediction[3])
    centres, total = app_pinn.gaussian_centres(model, view)
    assert len(centres) == total == 12  # the plane holds time itself: every centre is shown
    png = app_pinn.field_figure(view, centres, method="PIG")
    assert png.startswith(b"\x89PNG")


def test_reference_problems_are_messages(tmp_path):
    assert "no data/reference.nc" in app_pinn.read_reference(tmp_path)[1]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "reference.nc").write_bytes(b"half a file")
    assert "unreadable" in app_pinn.read_reference(tmp_path)[1]
    with pytest.raises(ValueError, match="does not match"):
        app_pinn.field_view(field_model("burgers"), reference_of("helmholtz", {"x": 3, "y": 3}))


# ------------------------------------------------------------------ MMGP logic
def mesh_bytes(nodes, cells, kind: str = "triangle", suffix: str = ".vtu") -> bytes:
    import tempfile

    import meshio

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"m{suffix}"
        meshio.write(path, meshio.Mesh(np.column_stack([nodes, np.zeros(len(nodes))]), [(kind, cells)]))
        return path.read_bytes()


SQUARE = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)


def test_scalar_ranges_and_their_messages(tmp_path):
    (tmp_path / "case.yaml").write_text("physics: {load: [35, 25], shear: [-2, 2], young: [80, 120]}\n")
    ranges, why = app_mmgp.scalar_ranges(tmp_path)
    assert why == "" and ranges["load"] == (25.0, 35.0)
    assert app_mmgp.check_scalars({"load": 30, "shear": 0, "young": 100}, ranges) == []
    bad = app_mmgp.check_scalars({"load": 40, "shear": float("nan"), "young": 100}, ranges)
    assert len(bad) == 2 and "load must be between 25 and 35" in bad[0]
    (tmp_path / "case.yaml").write_text("physics: {load: 3}\n")
    assert "training range" in app_mmgp.scalar_ranges(tmp_path)[1]


def test_uploaded_meshes_that_cannot_be_used_are_messages():
    mesh, why = app_mmgp.mesh_from_upload("sq.vtu", mesh_bytes(SQUARE, np.array([[0, 1, 2], [0, 2, 3]])))
    assert why == "" and mesh[0].shape == (4, 2) and mesh[1].shape == (2, 3)
    _, why = app_mmgp.mesh_from_upload("quads.vtu", mesh_bytes(SQUARE, np.array([[0, 1, 2, 3]]), "quad"))
    assert "no linear triangles" in why
    _, why = app_mmgp.mesh_from_upload("flat.vtu", mesh_bytes(SQUARE, np.array([[0, 1, 2], [0, 0, 1]])))
    assert "degenerate" in why
    _, why = app_mmgp.mesh_from_upload("junk.vtu", b"not a mesh")
    assert "junk.vtu cannot be used" in why and "/tmp" not in why


# ------------------------------------------------------------------ the pages
pytest.importorskip("streamlit")


@pytest.fixture(scope="session")
def kg_smoke_run(tmp_path_factory) -> Path:
    """The PINN smoke run of these tests: Klein-Gordon has two space dimensions and time."""
    import surrogate

    torch.set_num_threads(1)
    return surrogate.run(ROOT / "cases" / "pig_klein_gordon.yaml", profile="smoke",
                         results=tmp_path_factory.mktemp("pinn_results"), quiet=True)


@pytest.fixture(scope="module")
def family_results(tmp_path_factory, kg_smoke_run, mmgp_smoke_run) -> Path:
    """One real run per family, a run of each with damaged surrogate weights, a failed MMGP run."""
    root = tmp_path_factory.mktemp("family_results")
    shutil.copytree(kg_smoke_run, root / "pig_klein_gordon" / kg_smoke_run.name, symlinks=True)
    shutil.copytree(mmgp_smoke_run, root / "mmgp" / mmgp_smoke_run.name, symlinks=True)
    broken = root / "pig_klein_gordon" / "20000101-000000-broken"
    shutil.copytree(kg_smoke_run, broken, symlinks=True)
    (broken / "model" / "pig.pt").write_bytes(b"truncated")
    damaged = root / "mmgp" / "20000101-000000-broken"
    shutil.copytree(mmgp_smoke_run, damaged, symlinks=True)
    (damaged / "model" / "mmgp_improved.pt").write_bytes(b"truncated")
    failed = root / "mmgp" / "20000101-000000-failed"
    failed.mkdir(parents=True)
    meta = json.loads((mmgp_smoke_run / "meta.json").read_text())
    (failed / "meta.json").write_text(json.dumps({**meta, "status": "failed", "error": "MeshError: bad notch"}))
    return root


def open_page(results: Path, page: str):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(ENTRY, default_timeout=120)
    at.session_state["results_dir"] = str(results)
    at.run()
    at.switch_page(f"views/{page}.py").run()
    assert not at.exception, at.exception
    return at


def pick(at, key: str, text: str):
    box = at.selectbox(key=key)
    return box.select(next(o for o in box.options if text in o)).run()


def shown(at, what: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, what))


def images(node) -> int:
    """Uncaptioned images (the drawn fields; the run's saved figures below carry captions)."""
    children = getattr(node, "children", None)
    found = 0
    for child in (children.values() if isinstance(children, dict) else []):
        found += (getattr(child, "type", None) == "image" and not any(child.captions)) + images(child)
    return found


def table(at, column: str):
    """The shown table with this column (AppTest does not expose a dataframe's key), or None."""
    return next((t.value for t in at.dataframe if column in t.value.columns), None)


def rerender_seconds(at) -> float:
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    assert not at.exception, at.exception
    return seconds


def test_pinn_page_field_error_centres_and_time_slider(family_results, kg_smoke_run):
    at = pick(open_page(family_results, "pinn"), "pinn_run", kg_smoke_run.name)
    assert at.radio(key="pinn_method").value == "pig"
    assert [m.label for m in at.metric][-1] == "Relative L2 error at t = 0"
    assert images(at.main) >= 1 and "Gaussian centres" in shown(at, "caption")
    seconds = rerender_seconds(at)
    print(f"PINN page render after first load: {seconds:.3f} s")
    assert seconds < TARGET_S
    first = at.metric[-1].value
    at.select_slider(key="pinn_time").set_value(5).run()
    assert not at.exception and at.metric[-1].label.startswith("Relative L2 error at t = 7.14")
    assert at.metric[-1].value != first
    at.radio(key="pinn_method").set_value("pinn").run()
    assert not at.exception and "Gaussian centres" not in shown(at, "caption")
    assert at.select_slider(key="pinn_time").value == 5  # the time stays when the method changes


def test_pinn_page_with_damaged_weights_says_so_and_the_baseline_still_works(family_results):
    at = pick(open_page(family_results, "pinn"), "pinn_run", "broken")
    assert "Could not evaluate PIG" in shown(at, "error")
    at.radio(key="pinn_method").set_value("pinn").run()
    assert not at.exception and not at.error and images(at.main) >= 1


def test_mmgp_page_test_shape_prediction_std_solver_and_error(family_results, mmgp_smoke_run):
    at = pick(open_page(family_results, "mmgp"), "mmgp_run", mmgp_smoke_run.name)
    assert at.radio(key="mmgp_source").value == "test" and at.selectbox(key="mmgp_shape").value == "test_0000"
    assert images(at.main) >= 1
    assert list(table(at, "relative RMS error")["field"]) == ["u1", "u2", "von_mises"]
    assert table(at, "predicted")["solver"].notna().all()
    seconds = rerender_seconds(at)
    print(f"MMGP page render after first load: {seconds:.3f} s")
    assert seconds < TARGET_S
    at.number_input(key="mmgp_load").set_value(99.0).run()
    assert not at.exception and "load must be between 25 and 35" in shown(at, "error") and images(at.main) == 0
    assert "Scalar outputs" not in shown(at, "markdown")
    at.number_input(key="mmgp_load").set_value(30.0).run()
    assert not at.exception and not at.error and "set them to compare" in shown(at, "caption")
    assert table(at, "relative RMS error") is None and "solver" not in table(at, "predicted")
    at.selectbox(key="mmgp_shape").select("test_0001").run()  # another shape starts from its own scalars
    assert table(at, "relative RMS error") is not None
    at.selectbox(key="mmgp_method").select("gnn").run()
    assert not at.exception and "gives no standard deviation" in shown(at, "caption")


def test_mmgp_page_uploads_a_mesh_and_rejects_what_is_not_one(family_results, mmgp_smoke_run):
    from surrogate.mmgp.data import read_split

    sample = read_split(mmgp_smoke_run / "data", "test", 1)[0]
    at = pick(open_page(family_results, "mmgp"), "mmgp_run", mmgp_smoke_run.name)
    at.radio(key="mmgp_source").set_value("upload").run()
    assert "Upload a planar triangle mesh" in shown(at, "info")
    at.file_uploader(key="mmgp_upload").upload("notes.vtu", b"this is no mesh").run()
    assert not at.exception and "could not be read as a mesh" in shown(at, "error")
    at.file_uploader(key="mmgp_upload").upload("quads.vtu", mesh_bytes(SQUARE, np.array([[0, 1, 2, 3]]), "quad")).run()
    assert not at.exception and "no linear triangles" in shown(at, "error")
    at.file_uploader(key="mmgp_upload").upload("mine.vtu", mesh_bytes(sample.nodes, sample.triangles)).run()
    assert not at.exception and not at.error and images(at.main) >= 1
    assert at.number_input(key="mmgp_load").value == pytest.approx(30.0)  # the middle of the training range
    assert table(at, "relative RMS error") is None
    at.selectbox(key="mmgp_method").select("oracle_gp").run()
    assert "shape parameters" in shown(at, "error")


def test_failed_or_damaged_mmgp_runs_are_messages_and_the_page_keeps_working(family_results):
    at = pick(open_page(family_results, "mmgp"), "mmgp_run", "failed")
    assert "bad notch" in shown(at, "warning") and "no trained model" in shown(at, "info")
    at = pick(at, "mmgp_run", "broken")
    assert not at.exception and "Could not predict with mmgp_improved" in shown(at, "error")
    at.selectbox(key="mmgp_method").select("mmgp_faithful").run()
    assert not at.exception and not at.error and images(at.main) >= 1


def test_mesh_drawing_helpers():
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    png = app_mmgp.tripcolor_figure(SQUARE, tri, [app_mmgp.Panel("a", np.arange(4.0), "viridis", True),
                                                  app_mmgp.Panel("b", np.ones(4), "magma")])
    assert png.startswith(b"\x89PNG")
    mesh = app_mmgp.pyvista_mesh(SQUARE, tri, np.arange(4.0))
    assert mesh.n_cells == 2 and mesh.n_points == 4
    assert np.all(mesh.points[:, 2] == 0)
    relief = app_mmgp.pyvista_mesh(SQUARE, tri, np.arange(4.0), relief=0.5)
    size = np.ptp(SQUARE[:, :2], axis=0).max()
    np.testing.assert_allclose(relief.points[:, 2], 0.5 * size * np.arange(4.0) / 3)


def test_3d_scenes_are_self_contained_vtk_js_pages():
    pytest.importorskip("trame_pyvista")
    tri = np.array([[0, 1, 2], [0, 2, 3]])
    panels = [app_mmgp.Panel("a", np.arange(4.0), "viridis", True), app_mmgp.Panel("b", np.ones(4), "magma")]
    pages = app_mmgp.scene_html(SQUARE, tri, panels, relief=0.3)
    assert len(pages) == 2
    for page in pages:
        assert page.lstrip().lower().startswith("<!doctype html") and "vtk" in page
        assert not re.search(r"<script[^>]+src=", page), "the scene must not load scripts from elsewhere"


def test_page_logic_modules_do_not_import_streamlit():
    import os
    import subprocess
    import sys

    code = ("import sys, surrogate.app_pinn, surrogate.app_mmgp; "
            "assert 'streamlit' not in sys.modules, 'streamlit imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})

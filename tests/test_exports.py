"""`surrogate export`: every format is loaded back and reproduces its model; bad requests write nothing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from surrogate.cli import main
from surrogate.core.store import read_json, write_json

# the exported files are run in a fresh interpreter in which `import surrogate` fails
WITHOUT_PACKAGE = "import sys; sys.modules['surrogate'] = None; sys.path.insert(0, {folder!r}); "


def app_example(name: str):
    """A script of apps/coupling, imported as a module."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "apps" / "coupling" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"coupling_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(run: Path, fmt: str, *extra: str) -> dict:
    assert main(["export", str(run), "--format", fmt, *extra]) == 0
    folder = run / "exports" / (fmt if not extra else f"{extra[-1]}.{fmt}")
    check = read_json(folder / "check.json")
    assert check["max_rel_error"] <= check["tolerance"]
    assert all((folder / f).exists() for f in check["files"])
    return check


def standalone(folder: Path, code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE.format(folder=str(folder)) + code],
                         capture_output=True, text=True, cwd=folder, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_lorenz96_numpy_export_runs_without_torch_and_matches_at_other_ring_sizes(lorenz96_smoke_run, tmp_path):
    run = Path(lorenz96_smoke_run)
    check = export(run, "numpy")
    assert check["tolerance"] <= 1e-5 and check["seconds_per_state_numpy"] > 0
    model = surrogate.load(run)
    X = np.random.default_rng(1).normal(2.5, 3.6, size=(5, 16))  # twice the trained ring
    np.save(tmp_path / "X.npy", X)
    got = standalone(run / "exports" / "numpy",
                     f"import json, numpy as np; from numpy_mno import NumpyMNO; "
                     f"X = np.load({str(tmp_path / 'X.npy')!r}); "
                     f"print(json.dumps(NumpyMNO.load('mno.npz')(X).tolist()))")
    want = model.closure(X)
    assert np.abs(np.array(got) - want).max() <= 1e-5 * np.abs(want).max()


def test_lorenz96_torchscript_export_loads_back(lorenz96_smoke_run):
    run = Path(lorenz96_smoke_run)
    check = export(run, "torchscript")
    traced = torch.jit.load(str(run / "exports" / "torchscript" / "closure.pt"))
    X = torch.randn(3, check["K"], dtype=torch.float64) * 3 + 2.5
    assert torch.allclose(traced(X), torch.as_tensor(surrogate.load(run).closure(X.numpy())), rtol=1e-5, atol=1e-6)


def test_pig_exports_to_torchscript_and_onnx(helmholtz_smoke_run):
    onnxruntime = pytest.importorskip("onnxruntime")
    run = Path(helmholtz_smoke_run)
    export(run, "torchscript")
    check = export(run, "onnx")
    assert check["tolerance"] == 1e-6  # the field is float64 end to end
    field = surrogate.load(run)
    x = np.random.default_rng(2).uniform(field.problem.lower, field.problem.upper, size=(100, 2))
    session = onnxruntime.InferenceSession(str(run / "exports" / "onnx" / "field.onnx"))
    u = session.run(["u"], {"x": x})[0]
    assert np.abs(u - field(x)).max() <= 1e-6 * np.abs(field(x)).max()
    export(run, "onnx", "--method", "pinn")  # the deepxde baseline too, in its own folder
    example = app_example("pig_onnx_field")
    assert np.allclose(example.main([str(run), "--points", "5"]).ravel(),
                       field(np.stack(np.meshgrid(*[np.linspace(*field.problem.bounds[c], 5) for c in field.coords],
                                                  indexing="ij"), -1).reshape(-1, 2)), rtol=1e-9, atol=1e-12)


def test_mmgp_numpy_export_predicts_with_numpy_and_scipy_alone(mmgp_smoke_run, tmp_path):
    from surrogate.mmgp.data import read_split

    run = Path(mmgp_smoke_run)
    check = export(run, "numpy")
    npz = check["files"][0]
    s = read_split(run / "data", "ood", 1)[0]  # the out-of-range shape (one deep notch): the warning is part of it
    with pytest.warns(UserWarning, match="far outside"):
        want = surrogate.load(run).predict_arrays(s.nodes, s.triangles, s.inputs)
    sample_file = str(run / "data" / f"{s.name}.nc")
    got = standalone(run / "exports" / "numpy",
                     "import json, warnings, numpy as np, xarray as xr; from numpy_mmgp import NumpyMMGP; "
                     f"ds = xr.open_dataset({sample_file!r}); warnings.simplefilter('ignore'); "
                     f"out = NumpyMMGP.load({npz!r}).predict(np.column_stack([ds.node_x, ds.node_y]), "
                     "ds.face_nodes.values, [float(ds[k]) for k in ('load', 'shear', 'young')]); "
                     "print(json.dumps({k: [m.tolist(), s.tolist()] for k, (m, s) in out['fields'].items()}))")
    for name, (mean, std) in want["fields"].items():
        assert np.allclose(got[name][0], mean, rtol=1e-6, atol=1e-9 * np.abs(mean).max())
        assert np.allclose(got[name][1], std, rtol=1e-6, atol=1e-9 * np.abs(std).max())

    import meshio

    mesh = tmp_path / "user.vtu"
    meshio.write(mesh, meshio.Mesh(np.column_stack([s.nodes, np.zeros(len(s.nodes))]), [("triangle", s.triangles)]))
    with pytest.warns(UserWarning, match="far outside"):
        out = app_example("mmgp_numpy_predict").main([str(run), str(mesh), "--scalars", *map(str, s.inputs)])
    assert np.isclose(out["scalars"]["compliance"][0], want["scalars"]["compliance"][0], rtol=1e-6)
    assert "von_mises_std" in meshio.read(tmp_path / "user_prediction.vtu").point_data


def test_bad_exports_say_what_is_allowed_and_write_nothing(lorenz96_smoke_run, tmp_path, capsys, monkeypatch):
    run = Path(lorenz96_smoke_run)
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "allowed: numpy, torchscript" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "numpy", "--method", "local_mlp"]) == 2
    assert "covers the FNO closures" in capsys.readouterr().err
    assert not (run / "exports" / "onnx").exists() and not (run / "exports" / "local_mlp.numpy").exists()

    failed = tmp_path / "failed_run"
    failed.mkdir()
    write_json(failed / "meta.json", {"family": "lorenz96", "status": "failed", "error": "diverged"})
    assert main(["export", str(failed), "--format", "numpy"]) == 2
    assert "only a finished run can be exported" in capsys.readouterr().err
    assert not (failed / "exports").exists()

    # an export that does not reproduce its model is refused, and an earlier good export stays
    from surrogate.lorenz96 import export as lorenz96_export

    export(run, "numpy")
    before = (run / "exports" / "numpy" / "mno.npz").read_bytes()

    def drifting(run, out, method):
        (out / "mno.npz").write_bytes(b"wrong")
        return {"files": ["mno.npz"], "max_rel_error": 0.5, "tolerance": 1e-5}

    monkeypatch.setitem(lorenz96_export.FORMATS, "numpy", drifting)
    assert main(["export", str(run), "--format", "numpy"]) == 1
    assert "differs from the model" in capsys.readouterr().err
    assert (run / "exports" / "numpy" / "mno.npz").read_bytes() == before
    assert [p.name for p in (run / "exports").iterdir() if p.name.startswith(".")] == []


def test_prose_exports_the_operator_and_the_symbol_decoder_step(prose_smoke_run):
    run = Path(prose_smoke_run)
    check = export(run, "torchscript")
    assert "operator.pt" in check["files"]
    check = export(run, "onnx")
    assert "symbol decoder" in check["not_exported"]
    vocabulary = read_json(run / "exports" / "torchscript" / "vocabulary.json")
    assert vocabulary["tokens"][vocabulary["eos"]]


def test_smart_forecaster_exports_one_torchscript_file_per_topology(dragonfly_smoke_run, capsys):
    run = Path(dragonfly_smoke_run)
    check = export(run, "torchscript")
    assert {"forecaster_df72.pt", "forecaster_df342.pt", "forecaster_df1056.pt"} <= set(check["files"])
    traced = torch.jit.load(str(run / "exports" / "torchscript" / "forecaster_df72.pt"))
    signature = read_json(run / "exports" / "torchscript" / "signature.json")
    x = torch.rand(1, signature["steps"], signature["presets"]["df72"], traced.net.x_mean.shape[-1])
    q = traced(x, torch.full((1, signature["steps"]), 1000.0))
    assert q.shape == (1, 5) and bool((q.diff(dim=-1) >= 0).all())  # nested quantiles
    assert main(["export", str(run), "--format", "onnx"]) == 2
    assert "allowed: torchscript" in capsys.readouterr().err
    assert main(["export", str(run), "--format", "torchscript", "--method", "moving_average"]) == 2
    assert "not a neural forecaster" in capsys.readouterr().err

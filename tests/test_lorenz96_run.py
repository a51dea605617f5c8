"""A Lorenz96 case end to end: run folder, CF metadata, reload, determinism, resume, CLI."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import surrogate
from surrogate.cli import main
from surrogate.core.store import RunFolder

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "cases" / "lorenz96_mno.yaml"


def metric_values(run: Path) -> dict:
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    return {(r["method"], r["metric"]): r["value"] for r in rows if not r["metric"].startswith(("wall_s", "speedup"))}


def test_run_folder_has_everything(lorenz96_smoke_run: Path):
    run = lorenz96_smoke_run
    for name in ("case.yaml", "meta.json", "metrics.json", "predictions.nc", "log.txt", "model/index.json",
                 "model/mno.pt", "model/mno.json", "data/train.nc", "figures/forecast_rmse.png"):
        assert (run / name).exists(), name
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["seed"] == 0 and meta["versions"]["torch"]
    assert (run.parent / "latest").resolve() == run.resolve()
    assert not list(run.rglob(".*.tmp")) and not list(run.rglob("*.pkl"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["headline"]["method"] == "mno" and np.isfinite(metrics["headline"]["value"])
    methods = {r["method"] for r in metrics["rows"]}
    assert {"mno", "null", "cubic", "quartic_ar1", "local_mlp", "pure_fno", "truth", "full_solver"} <= methods


def test_netcdf_files_carry_cf_metadata_through_a_round_trip(lorenz96_smoke_run: Path):
    for path in [lorenz96_smoke_run / "predictions.nc", lorenz96_smoke_run / "data" / "train.nc"]:
        with xr.open_dataset(path) as ds:
            assert ds.attrs["Conventions"].startswith("CF-")
            assert "surrogate" in ds.attrs["history"]
            for name, var in ds.variables.items():
                assert "units" in var.attrs and "long_name" in var.attrs, (path.name, name)


def test_loaded_model_reproduces_end_of_training_outputs_exactly(lorenz96_smoke_run: Path):
    model = surrogate.load(lorenz96_smoke_run)
    with xr.open_dataset(lorenz96_smoke_run / "predictions.nc") as p:
        x, u = p.x_point.values, p.u_prediction.sel({"method": "mno"}).values
    np.testing.assert_array_equal(model.closure(x), u)
    assert model.metadata["method"] == "mno" and model.metadata["inputs"]["X"]["units"] == "1"
    cubic = surrogate.load(lorenz96_smoke_run, method="cubic")
    with xr.open_dataset(lorenz96_smoke_run / "predictions.nc") as p:
        np.testing.assert_array_equal(cubic.closure(x), p.u_prediction.sel({"method": "cubic"}).values)
    with pytest.raises(KeyError, match="has no method 'gan'"):
        surrogate.load(lorenz96_smoke_run, method="gan")


def test_same_seed_gives_the_same_metrics(lorenz96_smoke_run: Path, smoke_results: Path):
    again = surrogate.run(CASE, profile="smoke", results=smoke_results, fresh=True, quiet=True)
    assert again != lorenz96_smoke_run
    assert metric_values(again) == metric_values(lorenz96_smoke_run)


def test_an_interrupted_run_resumes_and_ends_as_an_uninterrupted_one(tmp_path, monkeypatch):
    from surrogate.core import training

    overrides = ["train.epochs=2", "data.transfer_K=[]", "evaluate.cost=[]"]
    reference = surrogate.run(CASE, "smoke", overrides, results=tmp_path / "a", quiet=True)

    saves = []
    original = training.Trainer._save

    def interrupt_after_first_epoch(self, epoch):
        original(self, epoch)
        saves.append(epoch)
        if len(saves) == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_save", interrupt_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        surrogate.run(CASE, "smoke", overrides, results=tmp_path / "b", quiet=True)
    (first,) = [p for p in (tmp_path / "b" / "lorenz96_mno").iterdir() if not p.is_symlink()]
    assert RunFolder(first).status == "interrupted"
    resumed = surrogate.run(CASE, "smoke", overrides, results=tmp_path / "b", quiet=True)
    assert resumed == first and RunFolder(first).meta()["resumed"] == 1
    assert metric_values(resumed) == metric_values(reference)


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    results = tmp_path / "results"
    cmd = [sys.executable, "-m", "surrogate", "--results", str(results), "run", str(CASE), "--profile", "smoke",
           "train.epochs=20", "train.batch_size=64", "data.n_train=8", "data.transfer_K=[]", "evaluate.cost=[]"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    ckpt = None
    deadline = time.time() + 120
    while time.time() < deadline and ckpt is None and proc.poll() is None:
        found = list(results.glob("lorenz96_mno/*/checkpoints/mno.offline.pt"))
        ckpt = found[0] if found else None
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt is not None, "no checkpoint was written before the run ended"
    run = RunFolder(ckpt.parents[1])
    assert run.status == "interrupted"  # meta.json still says running, but no live process holds the lock

    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resuming run {run.path}" in out.stdout
    assert run.status == "finished"
    history = json.loads((run.path / "model" / "training.json").read_text())["mno"]["offline"]
    assert len(history) == 20  # every epoch once: none lost, none repeated


def test_cli_list_and_show(lorenz96_smoke_run: Path, smoke_results: Path, capsys):
    assert main(["--results", str(smoke_results), "list"]) == 0
    out = capsys.readouterr().out
    assert "cases:" in out and "lorenz96_mno/" in out and "finished" in out and "forecast_rmse_1mtu" in out
    assert main(["--results", str(smoke_results), "show", "lorenz96_mno"]) == 0
    out = capsys.readouterr().out
    assert "closure_rmse" in out and "quartic_ar1" in out and "speedup_K16_J8" in out
    assert main(["--results", str(smoke_results), "show", "nosuch"]) == 2


def test_cost_comparison_times_every_model_it_is_given(lorenz96_smoke_run: Path):
    from surrogate.core.case import CaseError, load_case
    from surrogate.lorenz96.evaluation import cost_comparison

    case = load_case(CASE, "smoke", ["evaluate.cost_methods=[pure_fno]"])
    models = {name: surrogate.load(lorenz96_smoke_run, method=name) for name in ["mno", *case.evaluate.cost_methods]}
    X = np.random.default_rng(0).uniform(-5.0, 10.0, (16, 8))
    times = cost_comparison(case, models, X, 16, 8, seed=0)
    assert set(times) == {"full", "mno", "pure_fno"} and all(t > 0 for t in times.values())
    with pytest.raises(CaseError, match="evaluate.cost_methods names no method: nosuch"):
        load_case(CASE, "smoke", ["evaluate.cost_methods=[nosuch]"])


def test_numpy_rk4_example_matches_the_packaged_rollout(lorenz96_smoke_run: Path):
    sys.path.insert(0, str(ROOT / "apps" / "coupling"))
    try:
        import lorenz96_numpy_rk4 as example
    finally:
        sys.path.pop(0)
    traj = example.main([str(lorenz96_smoke_run), "--steps", "50", "--members", "3"])
    model = surrogate.load(lorenz96_smoke_run)
    packaged = model.rollout(traj[0], 50)
    np.testing.assert_allclose(traj.transpose(1, 0, 2), packaged, rtol=1e-9, atol=1e-9)
    # the same loop on the numpy export: no torch in the closure, the same trajectory to float32 precision
    assert main(["export", str(lorenz96_smoke_run), "--format", "numpy"]) == 0
    exported = example.main([str(lorenz96_smoke_run), "--steps", "50", "--members", "3", "--exported"])
    np.testing.assert_allclose(exported, traj, rtol=1e-4, atol=1e-4)

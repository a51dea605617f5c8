"""torchrun with 2 CPU processes (gloo, DDP) trains PROSE, the SMART surrogate, the MMGP GNN baseline and PIG
as one process does on the same global batch.

The single-process side is the session's smoke run of the family (shared with the other tests; for
the GNN, an in-process run whose training ends by epochs, not by the clock). The torchrun run starts
from that run's solver data (the results cache), so only training and a small evaluation are repeated.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from surrogate.core.store import read_json

CASES = Path(__file__).resolve().parents[1] / "cases"
# float32 sums in another order (each rank reduces its half of the batch): the curves agree to ~1e-7
# relative here (1.3e-6 after 30 epochs in benchmarks/scaling.py); 1e-5 leaves room for other BLAS
# builds and thread counts, and is still far below what a wrong weighting of the ranks' losses gives
RTOL = 1e-5
# training as in the smoke profile, evaluation cut to what the training needs
PROSE_DDP = ["evaluate.baselines=[data_only]"]
DRAGONFLY_DDP = ["evaluate.baselines=[{kind: lstm, d_model: 8, layers: 1}, "
                 "{kind: gnn_only, d_model: 8, gnn_hidden: 8, layers: 1}]",  # an unused layer DDP is told about
                 "evaluate.hybrid.enabled=false", "evaluate.latency_samples=1"]
# a budget that never runs out: the epochs, not the clock, end the training, so both runs take the same steps
MMGP_GNN = ["evaluate.baselines=[{kind: gnn, hidden: 8, layers: 2, time_budget: 600, max_epochs: 3, batch_size: 4}]",
            "evaluate.figures=0"]


def torchrun(results: Path, case: str, *overrides: str) -> Path:
    """`surrogate run` of a smoke case under torchrun with 2 gloo processes; the run folder."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "surrogate",
           "--results", str(results), "run", str(CASES / case), "-p", "smoke", "-q", *overrides]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return results / Path(case).stem / "latest"


def with_cached_data(single_run: Path, results: Path, family: str) -> Path:
    """A results folder holding the solver data of `single_run`, so that a run there does not solve again."""
    shutil.copytree(single_run.parents[1] / ".cache" / family, results / ".cache" / family)
    return results


def assert_same_curves(a: list[float], b: list[float]) -> None:
    assert len(a) == len(b) > 0
    np.testing.assert_allclose(b, a, rtol=RTOL)


def assert_rank_zero_alone_wrote(run: Path) -> None:
    meta = read_json(run / "meta.json")
    assert meta["world_size"] == 2 and meta["status"] == "finished"
    assert len([p for p in run.parent.iterdir() if not p.is_symlink()]) == 1  # one run folder, not one per rank


@pytest.fixture(scope="module")
def launcher():
    pytest.importorskip("torch.distributed")


def test_prose_two_gloo_processes_reproduce_the_single_process_loss_curves(launcher, prose_smoke_run, tmp_path):
    two = torchrun(with_cached_data(prose_smoke_run, tmp_path, "prose"), "prose.yaml", *PROSE_DDP)
    a, b = read_json(prose_smoke_run / "model" / "training.json"), read_json(two / "model" / "training.json")
    assert set(a) == set(b) == {"prose", "prose_data_only"}
    for method in a:  # the symbol loss is weighted by tokens, the data loss by samples: both must agree
        for curve in ("loss", "data_loss", "symbol_loss"):
            assert_same_curves(a[method][curve], b[method][curve])
    assert_rank_zero_alone_wrote(two)


def test_smart_surrogate_two_gloo_processes_reproduce_the_single_process_loss_curves(launcher, dragonfly_smoke_run,
                                                                                     tmp_path):
    two = torchrun(with_cached_data(dragonfly_smoke_run, tmp_path, "dragonfly"), "dragonfly_smart.yaml",
                   *DRAGONFLY_DDP)
    a, b = read_json(dragonfly_smoke_run / "model" / "training.json"), read_json(two / "model" / "training.json")
    for method in ("smart", "lstm"):
        assert_same_curves(a[method]["loss"], b[method]["loss"])
    assert len(b["gnn_only"]["loss"]) == 2
    assert_rank_zero_alone_wrote(two)


def test_mmgp_gnn_two_gloo_processes_reproduce_the_single_process_loss_curve(launcher, mmgp_smoke_run, tmp_path):
    one = surrogate.run(CASES / "mmgp.yaml", "smoke", MMGP_GNN, quiet=True,
                        results=with_cached_data(mmgp_smoke_run, tmp_path / "one", "mmgp"))
    two = torchrun(with_cached_data(mmgp_smoke_run, tmp_path / "two", "mmgp"), "mmgp.yaml", *MMGP_GNN)
    a, b = read_json(one / "model" / "gnn.json"), read_json(two / "model" / "gnn.json")
    assert (a["epochs"], a["steps"]) == (b["epochs"], b["steps"]) == (3, 6)
    assert_same_curves(a["loss"], b["loss"])
    assert_rank_zero_alone_wrote(two)


@pytest.mark.parametrize("case, key, size", [
    ("prose.yaml", "train.batch_size", 8),
    ("dragonfly_smart.yaml", "smart: train.batch_size", 32),
    ("mmgp.yaml", "gnn: batch_size", 1),
])
def test_every_family_names_its_global_batch_for_the_world_size_check(case, key, size):
    # runner.run_case checks these against the world size on every rank before anything is written
    from surrogate.core import registry
    from surrogate.core.case import load_case

    c = load_case(CASES / case, "smoke")
    assert registry.pipeline_class(c.pipeline).batch_sizes(c)[key] == size


def tiny_meshes(n: int) -> list:
    """`n` unit squares of two triangles with random fields: enough for the GNN's training loop."""
    from surrogate.mmgp.data import FIELDS, Sample

    rng = np.random.default_rng(0)
    nodes = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    return [Sample(f"train_{i:04d}", nodes + 0.1 * rng.random((4, 2)), triangles,
                   {k: rng.random(4) for k in FIELDS}, rng.random(3), rng.random(3), np.zeros(1), 0.0)
            for i in range(n)]


def test_the_gnn_resumes_from_its_checkpoint_as_if_never_interrupted(tmp_path):
    from surrogate.mmgp.gnn import GNNSurrogate

    meshes = tiny_meshes(6)
    straight = GNNSurrogate(hidden=8, layers=1, batch_size=2).fit(meshes, 600, seed=3, max_epochs=4)
    checkpoint = tmp_path / "gnn.pt"
    GNNSurrogate(hidden=8, layers=1, batch_size=2).fit(meshes, 600, seed=3, max_epochs=2, checkpoint=checkpoint)
    resumed = GNNSurrogate(hidden=8, layers=1, batch_size=2).fit(meshes, 600, seed=3, max_epochs=4,
                                                                 checkpoint=checkpoint)
    assert (resumed.epochs, resumed.steps) == (straight.epochs, straight.steps) == (4, 12)
    np.testing.assert_array_equal(resumed.history_, straight.history_)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_a_batch_of_meshes_gives_each_mesh_its_own_prediction():
    from surrogate.mmgp.gnn import MeshGNN, union

    torch.manual_seed(0)
    net = MeshGNN(node_in=3, hidden=8, layers=2, n_fields=2, n_scalars=3)
    graphs = [(torch.randn(n, 3), torch.randint(0, n, (2, 2 * n)), torch.randn(2 * n, 3)) for n in (4, 6)]
    fields, scalars = net(*union(graphs), n_graphs=2)
    for g, (f, e, a) in enumerate(graphs):
        alone_fields, alone_scalars = net(f, e, a)
        rows = slice(0, 4) if g == 0 else slice(4, 10)
        torch.testing.assert_close(fields[rows], alone_fields)
        torch.testing.assert_close(scalars[g], alone_scalars)


def tiny_forecast_samples(n: int, seed: int):
    """`n` windows of 3 iterations on 2 routers with random counters: enough for an LSTM forecaster's loop."""
    from surrogate.dragonfly.methods import Samples

    rng = np.random.default_rng(seed)
    rt = 100 + 10 * rng.random((n, 3))
    return Samples("df72", rng.random((n, 3, 2, 16)).astype(np.float32), rt, 100 + 10 * rng.random(n),
                   list(rt), np.zeros(n, int), np.full(n, 4))


def test_an_interrupted_forecaster_fit_resumes_to_the_same_model_and_selected_epoch(tmp_path, monkeypatch):
    from surrogate.core.training import Trainer
    from surrogate.dragonfly.methods import Neural
    from surrogate.dragonfly.schema import TrainSpec

    # a learning rate so high that the first epoch stays the best: the resumed fit must remember it (started
    # at random, so that the untrained model, epoch -1, does not win instead)
    train, cal = [tiny_forecast_samples(12, 0)], [tiny_forecast_samples(4, 2)]
    cfg = TrainSpec(epochs=5, lr=0.3, batch_size=4)

    def fit(checkpoint: Path) -> tuple[Neural, list[float]]:
        torch.manual_seed(0)
        method = Neural("lstm", 3, kind="lstm", d_model=8, layers=1, init="random")
        return method, method.fit(train, cal, cfg, checkpoint, seed=0)

    straight, straight_losses = fit(tmp_path / "straight.pt")
    save = Trainer._save

    def save_then_stop(self, epoch):  # an interruption right after the third epoch's checkpoint
        save(self, epoch)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        fit(tmp_path / "resumed.pt")
    monkeypatch.setattr(Trainer, "_save", save)
    resumed, resumed_losses = fit(tmp_path / "resumed.pt")
    assert resumed_losses == straight_losses and len(resumed_losses) == 5
    assert resumed.metadata["selected_epoch"] == straight.metadata["selected_epoch"] == 0
    for a, b in zip(resumed.net.state_dict().values(), straight.net.state_dict().values()):
        assert torch.equal(a, b)


# both optimisers, with a few records each; no baseline (under torchrun only rank 0 would train it)
PIG_DDP = ["train.phases=[{optimizer: adam, steps: 6, lr: 1.0e-2}, {optimizer: lbfgs, steps: 4, max_iter: 5}]",
           "evaluate.baselines=[]"]


@pytest.mark.parametrize("case", ["pig_allen_cahn.yaml",  # causal weights over time chunks, initial condition
                                  "pig_helmholtz.yaml"])  # boundary condition
def test_pig_two_gloo_processes_reproduce_the_single_process_loss_curve(launcher, case, tmp_path):
    one = surrogate.run(CASES / case, "smoke", PIG_DDP, quiet=True, results=tmp_path / "one")
    shutil.copytree(tmp_path / "one" / ".cache", tmp_path / "two" / ".cache")
    two = torchrun(tmp_path / "two", case, *PIG_DDP)
    a, b = read_json(one / "model" / "pig.json")["curve"], read_json(two / "model" / "pig.json")["curve"]
    assert a["step"] == b["step"] == [2, 4, 6, 8, 10]
    # float64 sums of two halves instead of one whole: the same steps to round-off, L-BFGS line search included
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-9)
    np.testing.assert_allclose(b["error"], a["error"], rtol=1e-9)
    assert_rank_zero_alone_wrote(two)

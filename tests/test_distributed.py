"""torchrun with 2 CPU processes (gloo, DDP) trains exactly as one process does on the same global batch."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from surrogate.core.store import RunFolder, read_json

CASE = Path(__file__).resolve().parents[1] / "cases" / "lorenz96_mno.yaml"
# a short training with several epochs, offline and rollout, and the transfer retraining at K=16
OVERRIDES = ["train.epochs=3", "train.rollout_epochs=2", "evaluate.baselines=[null]", "evaluate.cost=[]"]


def surrogate_command(results: Path, nproc: int, *extra: str, overrides: list[str] = OVERRIDES) -> list[str]:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    return [sys.executable, *launcher, "-m", "surrogate", "--results", str(results), "run", str(CASE),
            "-p", "smoke", "-q", *overrides, *extra]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def surrogate_run(results: Path, nproc: int, *extra: str,
                  overrides: list[str] = OVERRIDES) -> subprocess.CompletedProcess:
    return subprocess.run(surrogate_command(results, nproc, *extra, overrides=overrides), capture_output=True,
                          text=True, env=ENV, timeout=600)


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory):
    pytest.importorskip("torch.distributed")
    root = tmp_path_factory.mktemp("ddp")
    single, double = surrogate_run(root / "one", 1), surrogate_run(root / "two", 2)
    assert single.returncode == 0, single.stderr
    assert double.returncode == 0, double.stderr[-3000:]
    return root / "one" / "lorenz96_mno" / "latest", root / "two" / "lorenz96_mno" / "latest"


def test_two_gloo_processes_reproduce_the_single_process_loss_curves(one_and_two):
    one, two = one_and_two
    assert read_json(two / "meta.json")["world_size"] == 2 and read_json(two / "meta.json")["status"] == "finished"
    curves_one, curves_two = read_json(one / "model" / "training.json"), read_json(two / "model" / "training.json")
    compared = 0
    for method, stages in curves_one.items():
        if not isinstance(stages, dict):
            continue
        for stage in ("offline", "rollout"):
            a, b = np.array(stages.get(stage, [])), np.array(curves_two[method].get(stage, []))
            assert a.shape == b.shape
            if a.size:
                # float32 sums in another order: the curves agree to ~1e-7; 1e-4 leaves room for other BLAS
                np.testing.assert_allclose(b, a, rtol=1e-4)
                compared += a.size
    assert compared >= 3 + 2 + 3  # mno offline and rollout, mno_retrained_K16 offline


def test_rank_zero_alone_writes_the_run_folder(one_and_two):
    one, two = one_and_two
    runs = [p for p in (two.parent).iterdir() if not p.is_symlink()]
    assert len(runs) == 1  # one run folder, not one per rank
    files = sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())


def test_a_world_size_that_does_not_divide_the_batch_is_refused_before_anything_is_written(tmp_path):
    out = surrogate_run(tmp_path, 2, "train.batch_size=33")
    assert out.returncode != 0
    assert "train.batch_size = 33 is not divisible by the torchrun world size 2" in out.stderr
    assert not (tmp_path / "lorenz96_mno").exists()


# offline training only, on a small training set, with enough epochs to be killed in the middle
RESUME = ["train.epochs=12", "train.batch_size=64", "data.n_train=8", "train.rollout_epochs=0",
          "evaluate.baselines=[null]", "evaluate.cost=[]", "data.transfer_K=[]"]


def test_a_killed_torchrun_run_resumes_on_both_ranks_as_if_never_interrupted(tmp_path):
    pytest.importorskip("torch.distributed")
    reference = surrogate_run(tmp_path / "reference", 2, overrides=RESUME)
    assert reference.returncode == 0, reference.stderr[-3000:]

    results = tmp_path / "killed"
    proc = subprocess.Popen(surrogate_command(results, 2, overrides=RESUME), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=ENV, start_new_session=True)
    checkpoint, deadline = None, time.time() + 300
    while time.time() < deadline and checkpoint is None and proc.poll() is None:
        found = list(results.glob("lorenz96_mno/*/checkpoints/mno.offline.pt"))
        checkpoint = found[0] if found else None
        time.sleep(0.05)
    # torchrun and both ranks at once, as a lost node would (torchrun starts each rank in its own session)
    ranks = [int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir()
             for pid in (task / "children").read_text().split()]
    for pid in [*ranks, proc.pid]:
        os.kill(pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint is not None, "no checkpoint was written before the run ended"
    run = RunFolder(checkpoint.parents[1])
    deadline = time.time() + 30  # a killed rank takes a moment to die
    while run.status == "running" and time.time() < deadline:
        time.sleep(0.1)
    assert run.status == "interrupted" and not run.stage_done("fit")

    resumed = subprocess.run(surrogate_command(results, 2, overrides=RESUME), capture_output=True, text=True,
                             env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run.status == "finished" and run.meta()["resumed"] == 1 and run.meta()["world_size"] == 2
    curve = read_json(run.path / "model" / "training.json")["mno"]["offline"]
    reference = tmp_path / "reference" / "lorenz96_mno" / "latest"
    expected = read_json(reference / "model" / "training.json")["mno"]["offline"]
    assert len(curve) == len(expected) == 12  # every epoch once
    # both ranks restart from the same checkpoint (weights and optimiser state), so the curve goes on
    # as in the uninterrupted run; a rank starting afresh would change the optimiser moments
    np.testing.assert_allclose(curve, expected, rtol=1e-6)

"""torchrun with 2 CPU processes (gloo, DDP) trains exactly as one process does on the same global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from surrogate.core.store import read_json

CASE = Path(__file__).resolve().parents[1] / "cases" / "lorenz96_mno.yaml"
# a short training with several epochs, offline and rollout, and the transfer retraining at K=16
OVERRIDES = ["train.epochs=3", "train.rollout_epochs=2", "evaluate.baselines=[null]", "evaluate.cost=[]"]


def surrogate_run(results: Path, nproc: int, *extra: str) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "surrogate", "--results", str(results), "run", str(CASE),
           "-p", "smoke", "-q", *OVERRIDES, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)


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

"""Core pieces: atomic writes, the NaN guard, resume of the training loop, metrics."""
from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from surrogate.core import metrics as M
from surrogate.core.store import RunFolder, atomic_path, load_weights, write_json
from surrogate.core.training import NonFiniteLoss, StopTraining, Trainer


def test_atomic_write_leaves_the_old_file_when_interrupted(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("{half")
            raise RuntimeError("crash while writing")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_run_locked_by_a_dead_unreaped_process_is_free_to_resume(tmp_path):
    run = RunFolder(tmp_path)
    run.lock()
    assert run.is_locked()  # this process is alive
    dead = subprocess.Popen([sys.executable, "-c", "pass"])  # not waited for: a zombie once it ends
    while open(f"/proc/{dead.pid}/stat").read().rpartition(")")[2].split()[0] != "Z":
        time.sleep(0.01)
    run.lock_file.write_text(str(dead.pid))
    assert not run.is_locked()
    dead.wait()


def _trainer(tmp_path, epochs):
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, Trainer(model, opt, None, tmp_path / "ckpt.pt", epochs, "test")


def test_nan_loss_stops_with_the_epoch_and_keeps_the_last_good_checkpoint(tmp_path):
    model, trainer = _trainer(tmp_path, 5)
    losses = iter([1.0, 0.5, float("nan")])
    with pytest.raises(NonFiniteLoss, match="loss became nan in epoch 3; the checkpoint of epoch 2 is kept"):
        trainer.run(lambda epoch: next(losses))
    assert int(load_weights(tmp_path / "ckpt.pt")["epoch"]) == 1  # zero-based: epoch 2 of 5


def test_stop_training_ends_early_without_recording_or_checkpointing_the_stopped_epoch(tmp_path):
    model, trainer = _trainer(tmp_path, 10)
    seen = []

    def epoch_fn(epoch):
        seen.append(epoch)
        if epoch == 2:
            raise StopTraining
        return 1.0

    assert trainer.run(epoch_fn) == [1.0, 1.0]
    assert seen == [0, 1, 2] and not model.training
    assert int(load_weights(tmp_path / "ckpt.pt")["epoch"]) == 1


def test_trainer_resumes_where_it_stopped(tmp_path):
    model, trainer = _trainer(tmp_path, 2)
    trainer.run(lambda epoch: 1.0 / (epoch + 1))
    model, trainer = _trainer(tmp_path, 4)
    seen = []
    history = trainer.run(lambda epoch: seen.append(epoch) or 0.1)
    assert seen == [2, 3] and history == [1.0, 0.5, 0.1, 0.1]


def test_hellinger_and_histograms():
    bins = np.linspace(-1, 1, 11)
    p = M.histogram_pdf(np.array([-0.95, 0.05, 0.05, 0.95]), bins)
    assert p.sum() == pytest.approx(1.0)
    assert M.hellinger(p, p) == pytest.approx(0.0, abs=1e-12)
    assert M.hellinger(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(1.0)


def test_autocorrelation_of_an_ar1_process():
    rng = np.random.default_rng(0)
    x = np.zeros((20, 4000))
    for t in range(1, 4000):
        x[:, t] = 0.8 * x[:, t - 1] + rng.standard_normal(20)
    acf = M.autocorrelation(x, 3)
    np.testing.assert_allclose(acf, [1, 0.8, 0.64, 0.512], atol=0.02)


def test_bootstrap_interval_contains_the_mean_and_anomaly_correlation_is_one_for_perfect_forecasts():
    rng = np.random.default_rng(1)
    x = rng.normal(2.0, 1.0, 500)
    lo, hi = M.bootstrap_ci(x, np.mean, 500)
    assert lo < 2.0 < hi and hi - lo < 0.3
    ref = rng.normal(size=(10, 8))
    np.testing.assert_allclose(M.anomaly_correlation(ref, ref, 0.5), 1.0)

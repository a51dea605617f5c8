"""The MNO with memory: what it takes as input, that its memory is used, its fit, its rollouts, resume."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import surrogate
from surrogate.core.store import RunFolder
from surrogate.lorenz96.closures import build
from surrogate.lorenz96.hybrid import HybridModel
from surrogate.lorenz96.physics import l96_tendency
from surrogate.lorenz96.schema import TrainSpec
from surrogate.lorenz96.training import train_offline, train_rollout

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "cases" / "lorenz96_mno_paper.yaml"
F, DT, H = 20.0, 0.005, 3


def memory_model(ar=(0.9, -0.2, 0.1)) -> HybridModel:
    torch.manual_seed(0)
    model = HybridModel(build("mno_memory", {"modes": 8, "width": 8, "layers": 2, "memory": H}), F, DT, "euler")
    model.method.ar.copy_(torch.tensor(ar, dtype=torch.float64))
    return model


def states(n: int, K: int = 8, seed: int = 0) -> np.ndarray:
    """n consecutive states of a one-scale Lorenz96 run (a smooth history, as in the data)."""
    X = np.random.default_rng(seed).normal(2.5, 3.6, size=(2, K))
    out = [X]
    for _ in range(n - 1):
        X = X + DT * l96_tendency(X, F)
        out.append(X)
    return np.stack(out, axis=1)  # (2, n, K)


def test_closure_takes_the_states_before_x_and_uses_them():
    model = memory_model()
    traj = states(H + 1)
    X, hist = traj[:, -1], traj[:, :-1]
    out = model.closure(X, hist)
    assert isinstance(out, np.ndarray) and out.shape == X.shape and np.isfinite(out).all()
    t = model.closure(torch.as_tensor(X), torch.as_tensor(hist))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.detach().numpy(), out, atol=1e-12)
    # by hand: M(X) + sum_i a_i (f_{-i} - M(X_{-i})), f from consecutive states, newest lag first
    M = lambda x: model.method(torch.as_tensor(x)).detach().numpy()  # noqa: E731
    full = np.concatenate([hist, X[:, None]], axis=1)
    f = (full[:, 1:] - full[:, :-1]) / DT - l96_tendency(full[:, :-1], F)
    dep = (f - M(full[:, :-1]))[:, ::-1]
    expected = M(X) + np.einsum("bhk,h->bk", dep, model.method.ar.numpy())
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)
    # the history matters: another past gives another closure; with no lags used, only M is left
    other = states(H + 1, seed=5)[:, :-1]
    assert np.abs(model.closure(X, other) - out).max() > 1e-3
    model.method.ar.zero_()
    np.testing.assert_allclose(model.closure(X, hist), M(X), atol=1e-12)
    # a longer history is fine: the last `memory` states are used
    longer = np.concatenate([np.zeros((2, 4, 8)), hist], axis=1)
    np.testing.assert_array_equal(model.closure(X, longer), model.closure(X, hist))


def test_bad_input_gives_clear_errors():
    model = memory_model()
    X = states(H + 1)[:, -1]
    with pytest.raises(ValueError, match="has memory: pass history"):
        model.closure(X)
    with pytest.raises(ValueError, match="expected history with shape"):
        model.closure(X, np.zeros((2, H - 1, 8)))
    with pytest.raises(ValueError, match="expected history with shape"):
        model.rollout(X, 3, history=np.zeros((3, H, 8)))
    with pytest.raises(ValueError, match="has memory: pass history"):
        model.rollout(X, 3)
    with pytest.raises(ValueError, match="forward-Euler"):
        HybridModel(build("mno_memory", {"modes": 8, "width": 8, "layers": 2}), F, DT, "rk4")
    markov = HybridModel(build("mno", {"modes": 8, "width": 8, "layers": 2}), F, DT, "euler")
    with pytest.raises(TypeError, match="Markovian"):
        markov.closure(X, np.zeros((2, H, 8)))
    with pytest.raises(ValueError, match="at least 1 lag"):
        build("mno_memory", {"memory": 0})


def test_rollout_carries_the_memory_that_its_own_states_imply():
    """A free run feeds back its own memory terms; that is the same as recovering the past closure
    from its own past states at every step, which is what `step(X, history=...)` does."""
    model = memory_model()
    traj = states(H + 1)
    run = model.rollout(traj[:, -1], 30, history=traj[:, :-1])
    assert run.shape == (2, 31, 8)
    seen = [torch.as_tensor(s) for s in traj.transpose(1, 0, 2)]
    with torch.no_grad():
        for _ in range(30):
            seen.append(model.step(seen[-1], history=torch.stack(seen[-1 - H : -1], dim=1)))
    by_steps = torch.stack(seen[H:], dim=1).numpy()
    np.testing.assert_allclose(run, by_steps, rtol=1e-7, atol=1e-7)
    # the memory changes the run: without lags it is the Markovian MNO's run
    model.method.ar.zero_()
    assert np.abs(model.rollout(traj[:, -1], 30, history=traj[:, :-1]) - run).max() > 1e-4


def test_fit_memory_recovers_the_lag_coefficients():
    torch.manual_seed(0)
    method = build("mno_memory", {"modes": 8, "width": 8, "layers": 2, "memory": 2})
    rng = np.random.default_rng(1)
    X = rng.normal(2.5, 3.6, size=(3, 2000, 8))
    a1, a2 = 1.5, -0.6  # a stable AR(2) departure on top of M
    r = np.zeros_like(X)
    for t in range(2, X.shape[1]):
        r[:, t] = a1 * r[:, t - 1] + a2 * r[:, t - 2] + 0.1 * rng.standard_normal(X.shape[::2])
    with torch.no_grad():
        markov = method(torch.as_tensor(X)).numpy()
    method.fit_memory(X, markov + r)
    np.testing.assert_allclose(method.ar.numpy(), [a1, a2], atol=0.02)


def test_trains_offline_and_through_rollouts_and_round_trips(tmp_path):
    traj = states(60)
    X = np.concatenate([traj, states(60, seed=2)])  # (4, 60, 8)
    target = 0.5 - 0.3 * X + 0.01 * X**2
    model = memory_model(ar=(0.0, 0.0, 0.0))
    cfg = TrainSpec(epochs=2, batch_size=32, rollout_steps=5, rollout_epochs=2, rollout_windows=16)
    train_offline(model, X, target, cfg, tmp_path / "off.pt", 0, torch.device("cpu"), "mem")
    assert np.abs(model.method.ar.numpy()).max() > 0  # the lags were fitted after the offline stage
    fitted = model.method.ar.clone()
    before = {k: v.clone() for k, v in model.method.named_parameters()}
    losses = train_rollout(model, X, cfg, tmp_path / "roll.pt", 0, torch.device("cpu"), "mem")
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert torch.equal(model.method.ar, fitted)  # fine-tuning moves the network, not the fitted lags
    after = dict(model.method.named_parameters())
    assert any(not torch.equal(v, after[k]) for k, v in before.items())
    x0, hist = X[:, 20], X[:, 20 - H : 20]
    run = model.rollout(x0, 4, history=hist)
    model.save(tmp_path, "m")
    again = HybridModel.load(tmp_path, "m")
    np.testing.assert_array_equal(again.rollout(x0, 4, history=hist), run)
    np.testing.assert_array_equal(again.method.ar.numpy(), fitted.numpy())


def metric_values(run: Path) -> dict:
    rows = json.loads((run / "metrics.json").read_text())["rows"]
    return {(r["method"], r["metric"]): r["value"] for r in rows if not r["metric"].startswith(("wall_s", "speedup"))}


def test_a_paper_case_run_with_memory_resumes_in_its_rollout_stage(tmp_path, monkeypatch):
    """Interrupted while the memory closure is fine-tuned, the run resumes and ends as an uninterrupted
    one: the fitted lags come back with the checkpoint, forecasts start from the stored history."""
    from surrogate.core import training

    overrides = ["train.rollout_epochs=2", "evaluate.cost=[]",
                 "evaluate.baselines=[null, {kind: mno_memory, memory: 4, modes: 4, width: 8, layers: 2}]"]
    reference = surrogate.run(PAPER, "smoke", overrides, results=tmp_path / "a", quiet=True)
    values = metric_values(reference)
    assert np.isfinite(values[("mno_memory", "mean_rmse_1mtu")])
    assert values[("mno_memory", "bounded_fraction")] == 1.0

    original = training.Trainer._save

    def interrupt_in_memory_rollout(self, epoch):
        original(self, epoch)
        if self.checkpoint.name == "mno_memory.rollout.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(training.Trainer, "_save", interrupt_in_memory_rollout)
    with pytest.raises(KeyboardInterrupt):
        surrogate.run(PAPER, "smoke", overrides, results=tmp_path / "b", quiet=True)
    monkeypatch.setattr(training.Trainer, "_save", original)
    (first,) = [p for p in (tmp_path / "b" / "lorenz96_mno_paper").iterdir() if not p.is_symlink()]
    assert RunFolder(first).status == "interrupted"
    resumed = surrogate.run(PAPER, "smoke", overrides, results=tmp_path / "b", quiet=True)
    assert resumed == first
    assert metric_values(resumed) == values
    model = surrogate.load(resumed, method="mno_memory")
    assert model.memory == 4
    with pytest.raises(ValueError, match="has memory"):
        model.rollout(np.zeros((1, 4)), 2)

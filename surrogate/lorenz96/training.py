"""Training: offline on the closure target, then rollout fine-tuning through the coarse model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.core import distributed
from surrogate.core.training import Trainer, batches
from surrogate.lorenz96.hybrid import HybridModel


def _optimiser(params, lr: float, weight_decay: float, epochs: int, cfg: Any):
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if cfg.scheduler == "cosine":
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    elif cfg.scheduler == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size, gamma=cfg.gamma)
    else:
        sched = None
    return opt, sched


def train_offline(model: HybridModel, X: np.ndarray, target: np.ndarray, cfg: Any, checkpoint: Path,
                  seed: int, device: torch.device, desc: str) -> list[float]:
    """Fit on pairs (X_t, target_t) from arrays of shape (trajectory, time, K).

    Closures learn target = the closure tendency; emulators learn X_{t+1} from X_t. The loss is the
    mean squared error in normalised units (for an unnormalised recipe that is physical units).
    A closure with memory trains its Markovian part so, then fits its lag coefficients on the same
    consecutive samples.
    """
    method = model.method
    method.fit_closed_form(X, target)
    if not method.trainable or cfg.epochs == 0:
        if model.memory:
            method.fit_memory(X, target)
        return []
    if method.role == "emulator":
        inputs, outputs = X[:, :-1], X[:, 1:]
    else:
        inputs, outputs = X, target
    x = torch.as_tensor(inputs.reshape(-1, X.shape[-1]), dtype=torch.float32, device=device)
    y = torch.as_tensor(outputs.reshape(-1, X.shape[-1]), dtype=torch.float32, device=device)
    method.to(device)
    scale = float(method.y_std)
    opt, sched = _optimiser(method.parameters(), cfg.lr, cfg.weight_decay, cfg.epochs, cfg)
    distributed.check_divides(cfg.batch_size, "train.batch_size")
    net = distributed.wrap(method)  # under torchrun: DDP; each rank takes its part of every batch

    if cfg.batching == "contiguous":  # consecutive time steps of one trajectory per batch, in order
        per = inputs.shape[1]
        chunks = [torch.arange(t * per + s, t * per + min(s + cfg.batch_size, per))
                  for t in range(inputs.shape[0]) for s in range(0, per, cfg.batch_size)]
        order = lambda e: chunks  # noqa: E731
    else:
        order = lambda e: batches(len(x), cfg.batch_size, seed, e)  # noqa: E731

    def epoch(e: int) -> float:
        total, n = 0.0, 0
        for idx in order(e):
            part, weight = distributed.shard(idx)
            pred = net(x[part])
            mse = torch.mean(((pred - y[part]) / scale) ** 2)
            opt.zero_grad(set_to_none=True)
            (mse * weight).backward()
            opt.step()
            total += float(mse.detach()) * len(part)
            n += len(part)
        total, n = distributed.sum_over_ranks(total, n)
        return total / n

    history = Trainer(method, opt, sched, checkpoint, cfg.epochs, desc).run(epoch)
    if model.memory:
        method.fit_memory(X, target)
    return history


def train_rollout(model: HybridModel, X: np.ndarray, cfg: Any, checkpoint: Path, seed: int,
                  device: torch.device, desc: str) -> list[float]:
    """Fine-tune by unrolling the coarse model `cfg.rollout_steps` steps and matching the true X.

    Windows of rollout_steps + 1 consecutive states are drawn from the training trajectories; the loss
    is the mean squared error of X over the window, in units of the climatological std of X.
    Gradients flow through the integrator (RK4 or Euler) into the closure. A closure with memory
    starts each window from the `memory` true states before it and then feeds its own memory back,
    as in a forecast; its lag coefficients stay as fitted.
    """
    method = model.method
    steps = cfg.rollout_steps
    if not method.trainable or steps == 0 or cfg.rollout_epochs == 0:
        return []
    n_traj, n_time, K = X.shape
    lead = model.memory  # states before each window that a closure with memory starts from
    if n_time <= steps + lead:
        raise ValueError(f"train.rollout_steps={steps} needs trajectories longer than {steps + lead} samples; "
                         f"they have {n_time}")
    rng = np.random.default_rng(seed + 7)
    n_windows = cfg.rollout_windows
    starts = np.stack([rng.integers(0, n_traj, n_windows), rng.integers(0, n_time - steps - lead, n_windows)], 1)
    windows = np.stack([X[i, t : t + lead + steps + 1] for i, t in starts])  # (W, lead+steps+1, K)
    # a closure with memory recovers its past from differences of states over dt: float64 keeps them exact
    w = torch.as_tensor(windows, dtype=torch.float64 if lead else torch.float32, device=device)
    x_scale = float(X.std())
    method.to(device)
    opt, sched = _optimiser(method.parameters(), cfg.rollout_lr, cfg.weight_decay, cfg.rollout_epochs, cfg)
    distributed.check_divides(cfg.rollout_batch_size, "train.rollout_batch_size")

    def epoch(e: int) -> float:
        total, n = 0.0, 0
        for idx in batches(len(w), cfg.rollout_batch_size, seed + 1, e):
            # the closure runs `steps` times per loss, which DDP's bookkeeping does not allow: the
            # gradients are averaged over ranks explicitly instead
            idx, weight = distributed.shard(idx)
            traj = w[idx, lead:]
            state = traj[:, 0]
            past = model.initial_memory(w[idx, :lead], state) if lead else None
            loss = 0.0
            for i in range(1, steps + 1):
                if past is not None:
                    state, past = model.memory_step(state, past)
                else:
                    state = model.step(state)
                loss = loss + torch.mean(((state - traj[:, i]) / x_scale) ** 2)
            loss = loss / steps
            opt.zero_grad(set_to_none=True)
            (loss * weight).backward()
            distributed.average_gradients(method.parameters())
            torch.nn.utils.clip_grad_norm_(method.parameters(), 1.0)
            opt.step()
            total += float(loss.detach()) * len(idx)
            n += len(idx)
        total, n = distributed.sum_over_ranks(total, n)
        return total / n

    return Trainer(method, opt, sched, checkpoint, cfg.rollout_epochs, desc).run(epoch)

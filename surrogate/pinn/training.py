"""PIG training: the PINN loss, Adam and L-BFGS phases, checkpoints, a wall-clock budget.

One "epoch" of the core Trainer is `steps_per_epoch` optimiser steps; a checkpoint is written after
each. Collocation points depend only on (seed, phase, resample index), so a resumed run sees the
same points. The loss is accumulated over chunks of points, one backward pass per chunk, which
bounds memory by the chunk size whatever the number of points.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from surrogate.core.store import load_weights, read_json, write_json
from surrogate.core.training import Trainer
from surrogate.pinn.pdes import Problem
from surrogate.pinn.pig import autograd_derivatives


def sample_points(problem: Problem, train, seed: int, dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pts = {"interior": problem.sample_interior(train.n_collocation, gen, dtype)}
    if "initial" in problem.loss_terms:
        pts["initial"], pts["initial_u"] = problem.sample_initial(train.n_initial, gen, dtype)
    if "boundary" in problem.loss_terms:
        pts["boundary"], pts["boundary_u"] = problem.sample_boundary(train.n_boundary, gen, dtype)
    if train.causal_chunks:  # sorted in time so the causal chunks are contiguous
        x = pts["interior"]
        pts["interior"] = x[torch.argsort(x[:, -1])]
    return pts


class PINNLoss:
    """Weighted residual + initial + boundary mean squares; `backward()` fills .grad chunk by chunk."""

    def __init__(self, model, problem: Problem, train, derivatives: str):
        self.model, self.problem, self.train = model, problem, train
        self.closed_form = derivatives == "closed_form"

    def _derivatives(self, x):
        if self.closed_form:
            return self.model.derivatives(x, self.problem.order)
        return autograd_derivatives(self.model, x, self.problem.order)

    def _residual(self, x):
        u, du, d2u = self._derivatives(x)
        return self.problem.residual(x, u, du, d2u)

    def _point_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point weights of the squared residual: 1/P, or the causal weights of Wang et al. (2024):
        chunk i of the time axis weighted by exp(-eps * sum of the losses of earlier chunks), no gradient."""
        P = len(x)
        if not self.train.causal_chunks:
            return torch.full((P,), 1.0 / P, dtype=x.dtype)
        M = self.train.causal_chunks
        lo, hi = self.problem.bounds["t"]
        chunk = ((x[:, -1] - lo) / (hi - lo) * M).long().clamp(0, M - 1)
        sq = torch.zeros(M, dtype=x.dtype)
        with torch.set_grad_enabled(not self.closed_form):  # double backprop needs the graph, even here
            for idx in torch.split(torch.arange(P), self.train.chunk_points):
                r = self._residual(x[idx]).detach()
                sq.index_add_(0, chunk[idx], r * r)
        counts = torch.bincount(chunk, minlength=M).clamp(min=1).to(x.dtype)
        chunk_loss = sq / counts
        w = torch.exp(-self.train.causal_eps * torch.cumsum(torch.cat([chunk_loss.new_zeros(1), chunk_loss[:-1]]), 0))
        self.causal_weights = w
        return (w / (M * counts))[chunk]

    def backward(self, pts: dict[str, torch.Tensor], need_grad: bool = True) -> dict[str, float]:
        weights = self.train.weights
        parts = {}
        x = pts["interior"]
        pw = self._point_weights(x)
        total = 0.0
        res = 0.0
        for idx in torch.split(torch.arange(len(x)), self.train.chunk_points):
            r = self._residual(x[idx])
            loss = (pw[idx] * r * r).sum()
            if need_grad:
                (weights.residual * loss).backward()
            res += loss.item()
        parts["residual"] = res
        total += weights.residual * res
        for term in ("initial", "boundary"):
            if term in pts:
                xb, ub = pts[term], pts[f"{term}_u"]
                loss = ((self.model(xb) - ub) ** 2).mean()
                if need_grad:
                    (getattr(weights, term) * loss).backward()
                parts[term] = float(loss)
                total += getattr(weights, term) * float(loss)
        parts["total"] = total
        return parts


def relative_l2(pred: np.ndarray, ref: np.ndarray) -> float:
    """Global relative L2 error ||pred - ref|| / ||ref|| over all values."""
    pred, ref = np.asarray(pred).ravel(), np.asarray(ref).ravel()
    return float(np.linalg.norm(pred - ref) / np.linalg.norm(ref))


def predict(model, x: np.ndarray, chunk: int = 8192) -> np.ndarray:
    dtype = next(model.parameters()).dtype
    out = []
    with torch.no_grad():
        for i in range(0, len(x), chunk):
            out.append(model(torch.as_tensor(x[i : i + chunk], dtype=dtype)).reshape(-1).double().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def train_pig(model, problem: Problem, train, derivatives: str, seed: int, checkpoints: Path,
              monitor: Callable[[Any], float], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every phase of `train.phases`; returns the learning curve (steps, seconds, loss, test error).

    `monitor(model)` gives the test error, recorded after each epoch; its cost is not counted as
    training time. The budget `train.time_limit_s` covers all phases; a phase that runs out of time
    ends early, and later phases are skipped.
    """
    dtype = next(model.parameters()).dtype
    curve_file = checkpoints / "curve.json"
    curve = read_json(curve_file) if curve_file.exists() else {"step": [], "seconds": [], "loss": [], "error": [],
                                                             "phase": [], "done": []}
    objective = PINNLoss(model, problem, train, derivatives)
    limit = train.time_limit_s or math.inf

    def spent() -> float:
        return curve["seconds"][-1] if curve["seconds"] else 0.0

    global_step = curve["step"][-1] if curve["step"] else 0
    for p, phase in enumerate(train.phases):
        if p in curve["done"] or phase.steps == 0:
            if (checkpoints / f"phase{p}.pt").exists():  # a finished phase: continue from where it ended
                model.load_state_dict(load_weights(checkpoints / f"phase{p}.pt")["model"])
            continue
        params = [q for q in model.parameters() if q.requires_grad]
        if phase.optimizer == "adam":
            opt = torch.optim.Adam(params, lr=phase.lr)
        else:
            opt = torch.optim.LBFGS(params, lr=phase.lr, max_iter=phase.max_iter, history_size=phase.history,
                                    tolerance_grad=1e-12, tolerance_change=0.0, line_search_fn="strong_wolfe")
        epochs = math.ceil(phase.steps / train.steps_per_epoch)
        state = {"pts": None, "key": None, "stopped": False}

        def points(step: int) -> dict[str, torch.Tensor]:
            key = step // phase.resample_every if phase.resample_every else 0
            if key != state["key"]:
                state["pts"] = sample_points(problem, train, seed * 1_000_003 + p * 10_007 + key, dtype)
                state["key"] = key
            return state["pts"]

        def epoch_fn(epoch: int) -> float:
            nonlocal global_step
            if state["stopped"] or spent() >= limit:
                state["stopped"] = True
                return curve["loss"][-1] if curve["loss"] else 0.0
            t0 = time.perf_counter()
            first, last = epoch * train.steps_per_epoch, min((epoch + 1) * train.steps_per_epoch, phase.steps)
            loss = float("nan")
            for step in range(first, last):
                pts = points(step)
                if phase.optimizer == "adam":
                    for g in opt.param_groups:  # smooth exponential decay, a function of the step only
                        g["lr"] = phase.lr * phase.decay_rate ** (step / phase.decay_steps)
                    opt.zero_grad(set_to_none=True)
                    loss = objective.backward(pts)["total"]
                    opt.step()
                else:
                    def closure():
                        opt.zero_grad(set_to_none=True)
                        return torch.tensor(objective.backward(pts)["total"])
                    loss = float(opt.step(closure))
                if not math.isfinite(loss) or spent() + time.perf_counter() - t0 >= limit:
                    last = step + 1
                    break
            elapsed = time.perf_counter() - t0
            global_step += last - first
            if math.isfinite(loss):
                model.eval()
                err = monitor(model)
                curve["step"].append(global_step)
                curve["seconds"].append(spent() + elapsed)
                curve["loss"].append(loss)
                curve["error"].append(err)
                curve["phase"].append(p)
                write_json(curve_file, curve)
                log(f"  {phase.optimizer} step {global_step}: loss {loss:.3e}, test rel. L2 {err:.3e}, "
                    f"{spent():.0f} s")
            return loss

        Trainer(model, opt, None, checkpoints / f"phase{p}.pt", epochs, f"pig {phase.optimizer}").run(epoch_fn)
        curve["done"].append(p)
        write_json(curve_file, curve)
    return curve

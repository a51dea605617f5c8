"""PIG training: the PINN loss, Adam and L-BFGS phases, checkpoints, a time budget.

One "epoch" of the core Trainer is `steps_per_epoch` optimiser steps; a checkpoint is written after
each. Collocation points depend only on (seed, phase, resample index), so a resumed run sees the
same points. The loss is accumulated over chunks of points, one backward pass per chunk, which
bounds memory by the chunk size whatever the number of points.

Under torchrun every rank draws the same points and takes its contiguous part of each set; the rank
terms of the loss add up to the global loss, and so do the gradients (summed over ranks after the
chunked backward passes, which DDP's one-forward-one-backward hooks do not cover). Every rank then
takes the same optimiser step, L-BFGS line search included, and rank 0's clock is the budget's.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from surrogate.core import distributed
from surrogate.core.store import load_weights, read_json, write_json
from surrogate.core.training import NonFiniteLoss, StopTraining, Trainer
from surrogate.pinn.pdes import Problem
from surrogate.pinn.pig import autograd_derivatives


def training_clock() -> float:
    """Seconds of CPU time of this process. The budgets and curves of PIG and of the PINN baseline both
    use it, so that two methods trained one after the other on a shared machine get the same compute
    even when the load changes between them; with one torch thread it equals wall time on an idle machine."""
    return time.process_time()


def draw_by_residual(problem: Problem, residual: Callable[[torch.Tensor], torch.Tensor], pool_size: int, n: int,
                     power: float, offset: float, gen: torch.Generator, dtype) -> torch.Tensor:
    """n distinct points of a uniform pool of `pool_size`, drawn with probability |r|^power / mean + offset."""
    pool = problem.sample_interior(pool_size, gen, dtype)
    density = residual(pool).abs().pow(power)
    p = density / density.mean().clamp(min=torch.finfo(dtype).tiny) + max(offset, 1e-12)  # never all 0
    return pool[torch.multinomial(p, n, replacement=False, generator=gen)]


def sample_points(problem: Problem, train, seed: int, dtype,
                  residual: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Interior, initial and boundary points of one set; with `train.adaptive` and a `residual(x)`, the
    interior points are drawn from a uniform pool with probability |r|^power / mean + offset (RAR-D)."""
    gen = torch.Generator().manual_seed(seed)
    pts = {"interior": problem.sample_interior(train.n_collocation, gen, dtype)}
    if "initial" in problem.loss_terms:
        pts["initial"], pts["initial_u"] = problem.sample_initial(train.n_initial, gen, dtype)
    if "boundary" in problem.loss_terms:
        pts["boundary"], pts["boundary_u"] = problem.sample_boundary(train.n_boundary, gen, dtype)
    if train.adaptive and residual is not None:
        a = train.adaptive
        pts["interior"] = draw_by_residual(problem, residual, a.pool * train.n_collocation, train.n_collocation,
                                           a.power, a.offset, gen, dtype)
    if train.causal_chunks:  # sorted in time so the causal chunks are contiguous
        x = pts["interior"]
        pts["interior"] = x[torch.argsort(x[:, -1])]
    return pts


def relocate_gaussians(model, problem: Problem, train, residual: Callable[[torch.Tensor], torch.Tensor],
                       seed: int) -> None:
    """Move the `train.relocate.share` of each channel's Gaussians with the smallest |weight| to points
    drawn with probability r^2 from a uniform pool; they start with weight 0, so the field loses only their
    old (smallest) contributions, and with the initial scale (and no rotation)."""
    spec, (k, N, D) = train.relocate, model.mu.shape
    moved = max(1, int(spec.share * N))
    gen = torch.Generator().manual_seed(seed)
    places = draw_by_residual(problem, residual, spec.pool * train.n_collocation, k * moved, 2.0, 0.0, gen,
                              model.mu.dtype).view(k, moved, D)
    sigma = torch.as_tensor(model.config["sigma_init"], dtype=model.mu.dtype).expand(moved, D)
    with torch.no_grad():
        for j in range(k):
            idx = torch.argsort(model.weight[j].abs())[:moved]
            model.mu[j, idx] = places[j] * model.scale + model.shift
            model.sigma[j, idx] = sigma
            model.weight[j, idx] = 0.0
            if hasattr(model, "rotation"):
                model.rotation[j, idx] = torch.eye(model.rotation.shape[-1], dtype=model.mu.dtype)[0]


# Larger temporaries are mapped fresh from the kernel and zeroed page by page at every evaluation:
# 2.5-3x slower per loss evaluation at 4 x 800 Gaussians and 2,000 points than with chunks of 512.
CHUNK_BYTES = 8 * 2**20


def chunk_points(train, model) -> int:
    """Points per backward pass: the case's `chunk_points`, or as many as keep one (channels, points,
    Gaussians) array of the embedding within CHUNK_BYTES."""
    if train.chunk_points:
        return train.chunk_points
    return max(64, CHUNK_BYTES // (model.weight.numel() * model.weight.element_size()))


class PINNLoss:
    """Weighted residual + initial + boundary mean squares; `backward()` fills .grad chunk by chunk."""

    def __init__(self, model, problem: Problem, train, derivatives: str):
        self.model, self.problem, self.train = model, problem, train
        self.closed_form = derivatives == "closed_form"
        self.chunk = chunk_points(train, model)

    def _derivatives(self, x):
        second = self.problem.second_dims  # only the second derivatives the residual reads
        if self.closed_form:
            return self.model.derivatives(x, self.problem.order, second)
        return autograd_derivatives(self.model, x, self.problem.order, second)

    def _residual(self, x):
        u, du, d2u = self._derivatives(x)
        return self.problem.residual(x, u, du, d2u)

    def residuals(self, x: torch.Tensor) -> torch.Tensor:
        """Residuals at x in chunks, no graph kept (causal weights, choice of points)."""
        with torch.set_grad_enabled(not self.closed_form):  # double backprop needs the graph, even here
            return torch.cat([self._residual(x[idx]).detach() for idx in torch.split(torch.arange(len(x)), self.chunk)])

    def point_weights(self, x: torch.Tensor) -> torch.Tensor:
        """Per-point weights of the squared residual at this rank's part of x (all of x on one process):
        1/P, or the causal weights of Wang et al. (2024): chunk i of the time axis weighted by
        exp(-eps * sum of the losses of earlier chunks), no gradient."""
        P, mine = len(x), x[distributed.my_part(len(x))]
        if not self.train.causal_chunks:
            return torch.full((len(mine),), 1.0 / P, dtype=x.dtype)
        return self._causal_weights(mine, self.residuals(mine))

    def _causal_weights(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Causal point weights from the residuals r at x (no gradient flows through them)."""
        M = self.train.causal_chunks
        lo, hi = self.problem.bounds["t"]
        chunk = ((x[:, -1] - lo) / (hi - lo) * M).long().clamp(0, M - 1)
        r = r.detach()
        sq = torch.zeros(M, dtype=x.dtype).index_add_(0, chunk, r * r)
        counts = torch.bincount(chunk, minlength=M).to(x.dtype)
        if distributed.active():  # chunk losses of all the points, whichever rank holds them
            sq, counts = torch.tensor(distributed.sum_over_ranks(*sq.tolist(), *counts.tolist()),
                                      dtype=x.dtype).split(M)
        counts = counts.clamp(min=1)
        chunk_loss = sq / counts
        w = torch.exp(-self.train.causal_eps * torch.cumsum(torch.cat([chunk_loss.new_zeros(1), chunk_loss[:-1]]), 0))
        self.causal_weights = w
        return (w / (M * counts))[chunk]

    def backward(self, pts: dict[str, torch.Tensor], need_grad: bool = True,
                 point_weights: torch.Tensor | None = None) -> dict[str, float]:
        """The loss and its gradient; `point_weights` (from `point_weights`) fixes the residual weights,
        which L-BFGS needs: its line search must see one objective, not one reweighted at every call."""
        weights = self.train.weights
        parts = {}
        x_all = pts["interior"]
        x = x_all[distributed.my_part(len(x_all))]
        largest_part = -(-len(x_all) // distributed.world_size())  # the same test on every rank
        single_pass = point_weights is None and self.train.causal_chunks and largest_part <= self.chunk
        if single_pass:  # one chunk: the causal weights come from the same residuals as the loss
            r_all = self._residual(x)
            pw = self._causal_weights(x, r_all)
        else:
            pw = self.point_weights(x_all) if point_weights is None else point_weights
        total = 0.0
        res = 0.0
        for idx in torch.split(torch.arange(len(x)), self.chunk):
            r = r_all if single_pass else self._residual(x[idx])
            loss = (pw[idx] * r * r).sum()
            if need_grad:
                (weights.residual * loss).backward()
            res += loss.item()
        parts["residual"] = res
        total += weights.residual * res
        for term in ("initial", "boundary"):
            if term in pts:
                part = distributed.my_part(len(pts[term]))
                xb, ub = pts[term][part], pts[f"{term}_u"][part]
                parts[term] = 0.0
                for idx in torch.split(torch.arange(len(xb)), self.chunk):  # chunked as the residual, same reason
                    loss = ((self.model(xb[idx]) - ub[idx]) ** 2).sum() / len(pts[term])
                    if need_grad:
                        (getattr(weights, term) * loss).backward()
                    parts[term] += loss.item()
                total += getattr(weights, term) * parts[term]
        parts["total"] = total
        if distributed.active():
            if need_grad:
                distributed.sum_gradients(self.model.parameters())
            parts = dict(zip(parts, distributed.sum_over_ranks(*parts.values())))
        return parts


class _Phase:
    """One optimiser phase as the core Trainer's epoch function (steps_per_epoch steps per call)."""

    def __init__(self, index: int, phase, model, problem: Problem, train, objective: PINNLoss, seed: int,
                 curve: dict[str, list], curve_file: Path, limit: float, monitor, log):
        self.index, self.phase, self.model, self.problem, self.train = index, phase, model, problem, train
        self.objective, self.seed, self.curve, self.curve_file = objective, seed, curve, curve_file
        self.limit, self.monitor, self.log = limit, monitor, log
        self.dtype = next(model.parameters()).dtype
        params = [q for q in model.parameters() if q.requires_grad]
        if phase.optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=phase.lr)
        else:
            self.opt = torch.optim.LBFGS(params, lr=phase.lr, max_iter=phase.max_iter, history_size=phase.history,
                                         tolerance_grad=1e-12, tolerance_change=0.0, line_search_fn="strong_wolfe")
        self.epochs = math.ceil(phase.steps / train.steps_per_epoch)
        self.pts, self.key, self.held_weights = None, None, None
        if phase.n_collocation:
            self.train = train.model_copy(update={"n_collocation": phase.n_collocation})
        # A fixed set is drawn uniformly even with train.adaptive: drawn from the residual, it would depend on
        # the model the phase was (re)started from, and a resumed run would train on other points.
        self.residual = objective.residuals if phase.resample_every else None

    def spent(self) -> float:
        return self.curve["seconds"][-1] if self.curve["seconds"] else 0.0

    def points(self, step: int) -> dict[str, torch.Tensor]:
        every = self.phase.resample_every
        key = step // every if every else 0
        if key != self.key:
            seed, relocate = self.seed * 1_000_003 + self.index * 10_007 + key, self.train.relocate
            if relocate and every and key and key % relocate.every == 0:
                relocate_gaussians(self.model, self.problem, self.train, self.objective.residuals, seed + 500_009)
                self.opt.state.clear()  # the curvature pairs describe the Gaussians before the move
            self.pts = sample_points(self.problem, self.train, seed, self.dtype, self.residual)
            self.key = key
        return self.pts

    def _closure(self):
        self.opt.zero_grad(set_to_none=True)
        return torch.tensor(self.objective.backward(self.pts, point_weights=self.held_weights)["total"])

    def __call__(self, epoch: int) -> float:
        curve, phase = self.curve, self.phase
        if self.spent() >= self.limit:  # out of time: end the phase without more checkpoints
            raise StopTraining
        t0 = training_clock()
        first, last = epoch * self.train.steps_per_epoch, min((epoch + 1) * self.train.steps_per_epoch, phase.steps)
        loss = float("nan")
        for step in range(first, last):
            pts = self.points(step)
            if phase.optimizer == "adam":
                for g in self.opt.param_groups:  # smooth exponential decay, a function of the step only
                    g["lr"] = phase.lr * phase.decay_rate ** (step / phase.decay_steps)
                self.opt.zero_grad(set_to_none=True)
                loss = self.objective.backward(pts)["total"]
                self.opt.step()
            else:
                # causal weights are updated between L-BFGS steps and held within one
                self.held_weights = self.objective.point_weights(pts["interior"])
                loss = float(self.opt.step(self._closure))  # the loss before the step
            out_of_time = self.limit < math.inf and distributed.any_rank(
                self.spent() + training_clock() - t0 >= self.limit)
            if not math.isfinite(loss) or out_of_time:
                last = step + 1
                break
        elapsed = distributed.broadcast(training_clock() - t0)  # one curve, the same on every rank
        if math.isfinite(loss):
            step_count = (curve["step"][-1] if curve["step"] else 0) + last - first
            err = self.monitor(self.model)
            for key, value in (("step", step_count), ("seconds", self.spent() + elapsed), ("loss", loss),
                               ("error", err), ("phase", self.index)):
                curve[key].append(value)
            write_json(self.curve_file, curve)
            self.log(f"  {phase.optimizer} step {step_count}: loss {loss:.3e}, test rel. L2 {err:.3e}, "
                     f"{self.spent():.0f} s")
        return loss


def _needle_hint(model, checkpoint: Path) -> str:
    """Whether a needle could have blown the loss up (1/scale^2 enters every derivative), judged on the
    kept checkpoint: the model itself may already hold NaNs."""
    sigma = load_weights(checkpoint)["model"]["sigma"] if checkpoint.exists() else model.sigma.detach()
    smallest = float(model.inverse_variance(sigma.detach()).rsqrt().nan_to_num(nan=1.0).min())
    if smallest >= 0.01:
        return ""
    return (f"The narrowest Gaussian has a scale of {smallest:.2g} (in the rescaled input range): a needle that "
            "the collocation points rarely touch. A floor on the scales, surrogate.sigma_min (for example 0.01), "
            "keeps them wider.")


def train_pig(model, problem: Problem, train, derivatives: str, seed: int, checkpoints: Path,
              monitor: Callable[[Any], float], log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every phase of `train.phases`; returns the learning curve (steps, seconds, loss, test error).

    `monitor(model)` gives the test error, recorded after each epoch; its cost is not counted as
    training time. The budget `train.time_limit_s` covers all phases; a phase ends at its share
    `until` of it, or when the budget runs out, and then later phases are skipped. Seconds are
    `training_clock()` seconds.
    """
    curve_file = checkpoints / "curve.json"
    curve = read_json(curve_file) if curve_file.exists() else {"step": [], "seconds": [], "loss": [], "error": [],
                                                             "phase": [], "done": []}
    limit = train.time_limit_s or math.inf
    for p, phase in enumerate(train.phases):
        if p in curve["done"] or phase.steps == 0:
            if (checkpoints / f"phase{p}.pt").exists():  # a finished phase: continue from where it ended
                _take_parameters(model, load_weights(checkpoints / f"phase{p}.pt")["model"])
            continue
        net = _in_precision(model, phase.dtype)
        objective = PINNLoss(net, problem, train, derivatives)
        ends = limit * phase.until if phase.until else limit
        run = _Phase(p, phase, net, problem, train, objective, seed, curve, curve_file, ends, monitor, log)
        try:
            Trainer(net, run.opt, None, checkpoints / f"phase{p}.pt", run.epochs, f"pig {phase.optimizer}").run(run)
        except NonFiniteLoss as err:
            raise NonFiniteLoss(f"{err} {_needle_hint(net, checkpoints / f'phase{p}.pt')}".rstrip()) from None
        if net is not model:
            _take_parameters(model, net.state_dict())
        curve["done"].append(p)
        write_json(curve_file, curve)
    return curve


def _in_precision(model, dtype: str | None):
    """The model itself, or a copy in another precision for one phase. The copy's buffers (input scaling,
    periodic frequencies) are rounded, so only its parameters are taken back afterwards."""
    if dtype is None or getattr(torch, dtype) == next(model.parameters()).dtype:
        return model
    return copy.deepcopy(model).to(getattr(torch, dtype))


def _take_parameters(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(state[name])

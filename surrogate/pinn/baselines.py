"""The PINN baseline: the same PDE through deepxde's own geometry, boundary conditions and training.

Float64, tanh (or sin) MLP, Adam then L-BFGS. L-BFGS is passed to deepxde as an optimizer instance,
one `step(closure)` of up to 20 iterations per deepxde iteration, which avoids the
`set_LBFGS_options` bug of deepxde 1.15 (its per-step iteration count is fixed at import time).
A budget in the same CPU-time clock as PIG's (`training_clock`) stops training from a callback.
"""
from __future__ import annotations

import contextlib
import io
import math
import os
from typing import Any, Callable

import numpy as np
import torch

from surrogate.core.training import NonFiniteLoss
from surrogate.pinn.pdes import Problem
from surrogate.pinn.training import training_clock


def deepxde():
    """deepxde on its pytorch backend (chosen here, never from ~/.deepxde)."""
    os.environ["DDE_BACKEND"] = "pytorch"
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its backend banner
            import deepxde as dde
    except ImportError as err:
        raise ImportError("the PINN baseline needs deepxde: pip install 'surrogate[pinn]'") from err
    if dde.backend.backend_name != "pytorch":
        raise RuntimeError(f"deepxde was already imported with backend {dde.backend.backend_name!r}; "
                           "the baseline needs pytorch (set DDE_BACKEND=pytorch)")
    return dde


def build_net(dim: int, width: int, depth: int, activation: str):
    dde = deepxde()
    previous = torch.get_default_dtype()
    with contextlib.redirect_stdout(io.StringIO()):
        dde.config.set_default_float("float64")
    try:
        return dde.nn.FNN([dim] + [width] * depth + [1], activation, "Glorot normal")
    finally:
        torch.set_default_dtype(previous)  # deepxde sets the global default; give it back


def build_data(problem: Problem, spec):
    """deepxde geometry, conditions and data object for `problem`."""
    dde = deepxde()
    space = problem.space
    lo = [problem.bounds[c][0] for c in space]
    hi = [problem.bounds[c][1] for c in space]
    geom = dde.geometry.Interval(lo[0], hi[0]) if len(space) == 1 else dde.geometry.Rectangle(lo, hi)

    def pde(x, y):
        du = torch.cat([dde.grad.jacobian(y, x, i=0, j=d) for d in range(problem.dim)], dim=1)
        d2u = None
        if problem.order > 1:  # only the second derivatives the residual reads: each costs a backward pass
            wanted = problem.second_dims
            d2u = torch.cat([dde.grad.hessian(y, x, i=d, j=d) if d in wanted else torch.full_like(y, math.nan)
                             for d in range(problem.dim)], dim=1)
        return problem.residual(x, y[:, 0], du, d2u)[:, None]

    column = lambda f: (lambda x: np.asarray(f(x)).reshape(-1, 1))  # noqa: E731
    on_boundary = lambda _, on_b: on_b  # noqa: E731
    if not problem.time_dependent:
        bc = dde.icbc.DirichletBC(geom, column(problem.boundary), on_boundary)
        return dde.data.PDE(geom, pde, [bc], num_domain=spec.n_domain, num_boundary=spec.n_boundary)
    t0, t1 = problem.bounds["t"]
    geomtime = dde.geometry.GeometryXTime(geom, dde.geometry.TimeDomain(t0, t1))
    conditions = [dde.icbc.IC(geomtime, column(problem.initial), lambda _, on_initial: on_initial)]
    if "x" in problem.periodic:
        conditions += [dde.icbc.PeriodicBC(geomtime, 0, on_boundary, derivative_order=k) for k in (0, 1)]
    else:
        conditions.append(dde.icbc.DirichletBC(geomtime, column(problem.boundary), on_boundary))
    return dde.data.TimePDE(geomtime, pde, conditions, num_domain=spec.n_domain, num_boundary=spec.n_boundary,
                            num_initial=spec.n_initial)


def train_deepxde(problem: Problem, spec, seed: int, time_limit: float | None,
                  monitor: Callable[[Any], float], log: Callable[[str], None] = print, record_every: int = 100):
    """Train the baseline; returns (net, curve) where curve has steps, seconds, loss and test error."""
    dde = deepxde()
    previous = torch.get_default_dtype()
    dde.config.set_random_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        dde.config.set_default_float("float64")
    curve: dict[str, list] = {"step": [], "seconds": [], "loss": [], "error": [], "phase": []}
    limit = time_limit or math.inf
    try:
        net = dde.nn.FNN([problem.dim] + [spec.width] * spec.depth + [1], spec.activation, "Glorot normal")
        model = dde.Model(build_data(problem, spec), net)

        class Clock(dde.callbacks.Callback):
            """Records the test error every `record_every` steps (not counted as training time); stops at the budget."""

            def __init__(self, phase: int, until: float):
                super().__init__()
                self.phase, self.until, self.steps, self.t = phase, until, 0, training_clock()
                self.base = curve["step"][-1] if curve["step"] else 0
                self.spent = curve["seconds"][-1] if curve["seconds"] else 0.0

            def record(self):
                state = self.model.train_state
                curve["step"].append(self.base + self.steps)
                curve["seconds"].append(self.spent)
                curve["loss"].append(float(np.sum(state.loss_train)) if state.loss_train is not None else math.nan)
                curve["error"].append(monitor(self.model.net))
                curve["phase"].append(self.phase)

            def on_epoch_end(self):
                self.steps += 1
                self.spent += training_clock() - self.t
                over = self.spent >= self.until
                if self.steps % record_every == 0 or over:
                    self.record()
                if over:
                    self.model.stop_training = True
                self.t = training_clock()

        phases = [("adam", spec.adam_steps), ("lbfgs", spec.lbfgs_steps)]
        for p, (name, steps) in enumerate(phases):
            if steps == 0 or (curve["seconds"] and curve["seconds"][-1] >= limit):
                continue
            if name == "adam":
                model.compile("adam", lr=spec.lr, verbose=0)
            else:
                model.compile(torch.optim.LBFGS(net.parameters(), lr=1, max_iter=20, history_size=100,
                                                tolerance_grad=1e-12, tolerance_change=0.0,
                                                line_search_fn="strong_wolfe"), verbose=0)
            # Adam stops at its share of the budget, so that L-BFGS runs whatever the network's size
            clock = Clock(p, limit * spec.adam_time_fraction if name == "adam" and spec.lbfgs_steps else limit)
            model.train(iterations=steps, display_every=record_every, callbacks=[clock], verbose=0)
            if clock.steps and curve["step"][-1:] != [clock.base + clock.steps]:
                clock.record()
            loss_train = model.train_state.loss_train
            last = float(np.sum(loss_train)) if loss_train is not None else math.nan
            if loss_train is not None and not math.isfinite(last):
                raise NonFiniteLoss(f"deepxde baseline: the loss became {last} in its {name} phase; "
                                    "lower evaluate.baselines[].lr")
            if curve["error"]:
                log(f"  deepxde {name}: {clock.steps} steps, loss {last:.3e}, test rel. L2 {curve['error'][-1]:.3e}, "
                    f"{curve['seconds'][-1]:.0f} s")
    finally:
        torch.set_default_dtype(previous)
    return net, curve

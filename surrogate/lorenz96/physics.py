"""Two-scale Lorenz96 (Lorenz 1996) and the coarse models that carry a closure.

    dX_k/dt     = X_{k-1} (X_{k+1} - X_{k-2}) - X_k + F - (h c / b) sum_j Y_{j,k}
    dY_{j,k}/dt = -c b Y_{j+1,k} (Y_{j+2,k} - Y_{j-1,k}) - c Y_{j,k} + (h c / b) X_k

The slow ring X has K sites, each with J fast variables Y. The fast variables are either one ring of
J*K sites ("ring", the standard form of Wilks 2005 and Arnold et al. 2013) or periodic within each
sector k ("sector", as in the MNO paper's code). Every function works on numpy arrays and on torch
tensors alike, batched over leading axes, so the same coarse model runs in numpy and differentiably
in torch.
"""
from __future__ import annotations

from typing import Callable, Literal

import numpy as np

Array = "np.ndarray | torch.Tensor"


def _roll(x, shift: int):
    """x[..., k - shift] at position k: np.roll / torch.roll along the last axis."""
    if isinstance(x, np.ndarray):
        return np.roll(x, shift, axis=-1)
    return x.roll(shift, dims=-1)


def l96_tendency(X, F: float):
    """One-scale Lorenz96 tendency N(X) = X_{k-1}(X_{k+1} - X_{k-2}) - X_k + F."""
    return _roll(X, 1) * (_roll(X, -1) - _roll(X, 2)) - X + F


def rk4_step(f: Callable, state, dt: float):
    """One classical Runge-Kutta step for a tendency f(state) (state may be a tuple of arrays)."""
    if isinstance(state, tuple):
        add = lambda s, k, a: tuple(si + a * ki for si, ki in zip(s, k))  # noqa: E731
        k1 = f(state)
        k2 = f(add(state, k1, dt / 2))
        k3 = f(add(state, k2, dt / 2))
        k4 = f(add(state, k3, dt))
        return tuple(s + dt / 6 * (a + 2 * b + 2 * c + d) for s, a, b, c, d in zip(state, k1, k2, k3, k4))
    k1 = f(state)
    k2 = f(state + dt / 2 * k1)
    k3 = f(state + dt / 2 * k2)
    k4 = f(state + dt * k3)
    return state + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


class TwoScaleLorenz96:
    """The resolved (truth) model. States: X of shape (..., K) and Y of shape (..., K, J)."""

    def __init__(self, K: int, J: int, F: float, h: float, b: float, c: float,
                 y_periodicity: Literal["ring", "sector"] = "ring"):
        if K < 4:
            raise ValueError(f"K must be at least 4 (the stencil reaches k-2 and k+1), got {K}")
        if J < 3:
            raise ValueError(f"J must be at least 3, got {J}")
        if y_periodicity not in ("ring", "sector"):
            raise ValueError(f"y_periodicity must be 'ring' or 'sector', got {y_periodicity!r}")
        self.K, self.J, self.F, self.h, self.b, self.c = K, J, F, h, b, c
        self.y_periodicity = y_periodicity

    def coupling(self, Y):
        """Forcing of the slow variables by the fast ones, -(h c / b) sum_j Y_{j,k}."""
        return -(self.h * self.c / self.b) * Y.sum(-1)

    def tendencies(self, state):
        X, Y = state
        dX = l96_tendency(X, self.F) + self.coupling(Y)
        if self.y_periodicity == "ring":
            shape = Y.shape
            Yr = Y.reshape(*shape[:-2], shape[-2] * shape[-1])
        else:
            Yr = Y
        adv = _roll(Yr, -1) * (_roll(Yr, -2) - _roll(Yr, 1))
        if self.y_periodicity == "ring":
            adv = adv.reshape(shape)
        dY = -self.c * self.b * adv - self.c * Y + (self.h * self.c / self.b) * X[..., None]
        return dX, dY

    def step(self, X, Y, dt: float):
        return rk4_step(self.tendencies, (X, Y), dt)

    def run(self, X, Y, dt: float, n_samples: int, sample_every: int, bar=None):
        """Integrate with RK4; return X and the coupling at n_samples times spaced sample_every steps.

        The first sample is the initial state. Arrays are (batch, time, K).
        """
        xs = np.empty((X.shape[0], n_samples, self.K))
        us = np.empty_like(xs)
        for i in range(n_samples):
            if i:
                for _ in range(sample_every):
                    X, Y = self.step(X, Y, dt)
                if bar is not None:
                    bar.update(1)
            xs[:, i], us[:, i] = X, self.coupling(Y)
        return xs, us, (X, Y)

    def spin_up(self, X, Y, dt: float, n_steps: int):
        for _ in range(n_steps):
            X, Y = self.step(X, Y, dt)
        return X, Y


def random_initial_state(K: int, J: int, n: int, rng: np.random.Generator):
    """X0 integers uniform in [-15, 15) and Y0 ~ N(0, 1), as in the MNO paper's code."""
    X = rng.integers(-15, 15, size=(n, K)).astype(float)
    Y = rng.standard_normal((n, K, J))
    return X, Y


class CoarseModel:
    """The slow equation alone, closed by `closure(X)`: X' = N(X) + closure(X).

    scheme "rk4" evaluates the closure at every stage; "euler" is the MNO paper's forward step
    X_{t+1} = X_t + dt (N(X_t) + f(X_t)). `noise(X)` (optional) adds a term held fixed over a step,
    for stochastic closures such as AR(1).
    """

    def __init__(self, F: float, dt: float, scheme: Literal["rk4", "euler"], closure: Callable):
        if scheme not in ("rk4", "euler"):
            raise ValueError(f"scheme must be 'rk4' or 'euler', got {scheme!r}")
        self.F, self.dt, self.scheme, self.closure = F, dt, scheme, closure

    def step(self, X, extra=0.0):
        f = lambda x: l96_tendency(x, self.F) + self.closure(x) + extra  # noqa: E731
        if self.scheme == "euler":
            return X + self.dt * f(X)
        return rk4_step(f, X, self.dt)

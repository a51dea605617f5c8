"""Physics-Informed Gaussians: a trainable Gaussian feature embedding followed by a small tanh MLP.

Feature j of k channels is F_j(z) = sum_i w_ji exp(-q_ji(z) / 2), each channel with its own N
Gaussians (means mu, per-dimension scales sigma, scalar weights w), z = the inputs mapped affinely
onto `input_range`. q is sum_d ((z_d - mu_d) / sigma_d)^2 for the diagonal covariance, or
(z - mu)^T R diag(sigma^-2) R^T (z - mu) with a learned rotation R for the full one. A periodic
coordinate uses 2 (1 - cos(w delta)) / w^2 in place of delta^2, which equals it near the mean and
makes u and all its derivatives exactly periodic. sigma is a raw parameter (only sigma^2 enters).
With `sigma_min` the scale in use is sqrt(sigma^2 + sigma_min^2): a Gaussian much narrower than the
spacing of the collocation points is invisible to the residual there, and one that had shrunk to
4e-5 turned up as a huge residual whenever a fresh point landed on it.

`derivatives` returns u, du/dx_d and d2u/dx_d^2 in closed form (Gaussian derivatives chained
through the MLP) so the PDE loss needs one backward pass instead of two.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class PIG(nn.Module):
    def __init__(self, lower: Sequence[float], upper: Sequence[float], n_gaussians: int, channels: int = 4,
                 hidden: Sequence[int] = (16,), sigma_init: float | Sequence[float] = 0.1, weight_std: float = 0.01,
                 input_range: Sequence[float] = (-1.0, 1.0), periodic: Sequence[bool] | None = None,
                 covariance: str = "diagonal", seed: int = 0, dtype: str = "float64",
                 local_cutoff: float | None = None, sigma_min: float | None = None):
        super().__init__()
        dim = len(lower)
        if n_gaussians < 1 or channels < 1:
            raise ValueError(f"n_gaussians and channels must be >= 1, got {n_gaussians}, {channels}")
        if covariance not in ("diagonal", "full"):
            raise ValueError(f"covariance must be 'diagonal' or 'full', got {covariance!r}")
        periodic = [bool(p) for p in (periodic or [False] * dim)]
        if covariance == "full" and (any(periodic) or dim not in (2, 3)):
            raise ValueError("covariance 'full' is implemented for 2 or 3 non-periodic coordinates only")
        if sigma_min is not None and not sigma_min > 0:
            raise ValueError(f"sigma_min must be positive, got {sigma_min}")
        if local_cutoff is not None and (covariance != "diagonal" or all(periodic) or local_cutoff <= 0):
            raise ValueError("local_cutoff needs a positive number of scales, the diagonal covariance and one "
                             "non-periodic coordinate")
        self.config = {"lower": list(map(float, lower)), "upper": list(map(float, upper)), "n_gaussians": n_gaussians,
                       "channels": channels, "hidden": list(hidden),
                       "sigma_init": float(sigma_init) if isinstance(sigma_init, (int, float))
                       else list(map(float, sigma_init)),
                       "weight_std": weight_std, "input_range": list(map(float, input_range)),
                       "periodic": periodic, "covariance": covariance, "seed": seed, "dtype": dtype,
                       "local_cutoff": local_cutoff, "sigma_min": sigma_min}
        dt = getattr(torch, dtype)
        gen = torch.Generator().manual_seed(seed)
        lo, hi = torch.tensor(lower, dtype=torch.float64), torch.tensor(upper, dtype=torch.float64)
        a, b = input_range
        scale = (b - a) / (hi - lo)
        self.register_buffer("scale", scale.to(dt))
        self.register_buffer("shift", (a - lo * scale).to(dt))
        # angular frequency 2 pi / period in z units for periodic coordinates, 0 otherwise
        self.register_buffer("omega", torch.tensor([2 * math.pi / (b - a) if p else 0.0 for p in periodic], dtype=dt))
        self.mu = nn.Parameter((a + (b - a) * torch.rand(channels, n_gaussians, dim, generator=gen,
                                                         dtype=torch.float64)).to(dt))
        sigma0 = torch.as_tensor(sigma_init, dtype=dt)  # one scale, or one per coordinate
        if sigma0.ndim and sigma0.shape != (dim,):
            raise ValueError(f"sigma_init needs one value or {dim} (one per coordinate), got {list(sigma0.shape)}")
        self.sigma = nn.Parameter(sigma0.expand(channels, n_gaussians, dim).clone())
        self.weight = nn.Parameter((weight_std * torch.randn(channels, n_gaussians, generator=gen,
                                                             dtype=torch.float64)).to(dt))
        if covariance == "full":
            n_rot = 2 if dim == 2 else 4  # rotation angle as a unit vector, or a unit quaternion
            init = torch.zeros(channels, n_gaussians, n_rot, dtype=dt)
            init[..., 0] = 1.0
            self.rotation = nn.Parameter(init)
        layers, width = [], channels
        for h in hidden:
            layers.append(nn.Linear(width, h, dtype=dt))
            width = h
        layers.append(nn.Linear(width, 1, dtype=dt))
        for layer in layers:  # glorot normal kernels, zero biases (as the paper's JAX code)
            std = math.sqrt(2.0 / (layer.in_features + layer.out_features))
            with torch.no_grad():
                layer.weight.copy_(std * torch.randn(layer.weight.shape, generator=gen, dtype=torch.float64))
                layer.bias.zero_()
        self.layers = nn.ModuleList(layers)

    @property
    def dim(self) -> int:
        return self.mu.shape[-1]

    def centres(self) -> torch.Tensor:
        """Gaussian means in the problem's coordinates, shape (channels, N, D)."""
        return (self.mu - self.shift) / self.scale

    def _rotations(self) -> torch.Tensor:
        r = self.rotation / self.rotation.norm(dim=-1, keepdim=True)
        if r.shape[-1] == 2:
            c, s = r[..., 0], r[..., 1]
            return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
        w, x, y, z = r.unbind(-1)
        return torch.stack([
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
            torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
            torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1)], -2)

    def inverse_variance(self, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """1 / scale^2 of every Gaussian along every rescaled coordinate, (k, N, D); the scales in use are
        sqrt(sigma^2 + sigma_min^2), from this model's sigma or from the `sigma` given (e.g. a checkpoint's)."""
        sigma = self.sigma if sigma is None else sigma
        floor = self.config.get("sigma_min")
        return 1 / (sigma.square() + floor**2) if floor else sigma.pow(-2)

    def _embedding(self, z: torch.Tensor, order: int, second: Sequence[int] | None = None):
        """Features (P, k) and, for order >= 1 / 2, their first z-derivatives (D, P, k) and pure second
        z-derivatives (len(second), P, k) along the dims in `second` (all by default)."""
        if self.config.get("local_cutoff"):
            return self._local_embedding(z, order, second)
        wt = self.weight[:, None, :]
        if self.config["covariance"] == "full":
            R = self._rotations()                                          # (k, N, D, D)
            A = torch.einsum("knab,knb,kncb->knac", R, self.inverse_variance(), R)  # precision matrices
            delta = z[None, :, None, :] - self.mu[:, None]                 # (k, P, N, D)
            Ad = torch.einsum("knab,kpnb->kpna", A, delta)
            G = torch.exp(-0.5 * (delta * Ad).sum(-1))
            grad_q_half = Ad.unbind(-1)                                    # dq/dz_d / 2
            curv_half = [A[:, None, :, d, d] for d in range(self.dim)]     # d2q/dz_d^2 / 2
        else:
            q, grad_q_half, curv_half = 0.0, [], []
            inv_var = self.inverse_variance()[:, None]                     # (k, 1, N, D)
            for d in range(self.dim):
                delta = z[None, :, None, d] - self.mu[:, None, :, d]       # (k, P, N)
                w = float(self.omega[d])
                if w:
                    q = q + 2 * (1 - torch.cos(w * delta)) / w**2 * inv_var[..., d]
                    if order:
                        grad_q_half.append(torch.sin(w * delta) / w * inv_var[..., d])
                        curv_half.append(torch.cos(w * delta) * inv_var[..., d])
                else:
                    q = q + delta * delta * inv_var[..., d]
                    if order:
                        grad_q_half.append(delta * inv_var[..., d])
                        curv_half.append(inv_var[..., d])
            G = torch.exp(-0.5 * q)
        wG = wt * G                                                        # (k, P, N)
        F = wG.sum(-1).T
        if order == 0:
            return F, None, None
        dF = torch.stack([-(wG * g).sum(-1).T for g in grad_q_half])
        d2F = self._second(F, order, second, lambda d: (wG * (grad_q_half[d] ** 2 - curv_half[d])).sum(-1).T)
        return F, dF, d2F

    def _second(self, F, order: int, second, along):
        """`along(d)` stacked over the wanted dims (all when `second` is None)."""
        if order < 2:
            return None
        return torch.stack([along(d) for d in (range(self.dim) if second is None else second)])

    def _per_dim_terms(self, delta, inv_var, d: int, order: int):
        """q_d, (dq_d/dz_d)/2 and (d2q_d/dz_d^2)/2 of one coordinate."""
        w = float(self.omega[d])
        if w:
            q = 2 * (1 - torch.cos(w * delta)) / w**2 * inv_var
            return q, (torch.sin(w * delta) / w * inv_var if order else None), (torch.cos(w * delta) * inv_var
                                                                                 if order else None)
        return delta * delta * inv_var, (delta * inv_var if order else None), (inv_var if order else None)

    def _local_embedding(self, z: torch.Tensor, order: int, second: Sequence[int] | None = None):
        """As `_embedding`, evaluating each Gaussian only at points within `local_cutoff` scales of its
        mean along the first non-periodic coordinate (points sorted once, windows by binary search).
        The neglected terms are below exp(-cutoff^2 / 2) of the Gaussian's weight."""
        k, N, D = self.mu.shape
        P = z.shape[0]
        d0 = self.config["periodic"].index(False)
        zs, perm = torch.sort(z[:, d0].detach())
        mu0 = self.mu[..., d0].detach().reshape(-1)
        half = self.config["local_cutoff"] * self.inverse_variance()[..., d0].detach().rsqrt().reshape(-1)
        lo = torch.searchsorted(zs, mu0 - half)
        hi = torch.searchsorted(zs, mu0 + half, right=True)
        counts = hi - lo
        g = torch.repeat_interleave(torch.arange(k * N), counts)               # Gaussian of each pair
        start = torch.cumsum(counts, 0) - counts
        p = perm[lo[g] + torch.arange(len(g)) - start[g]]                     # point of each pair
        slot = p * k + torch.div(g, N, rounding_mode="floor")                 # (point, channel) of each pair
        mu, inv_var = self.mu.reshape(k * N, D)[g], self.inverse_variance().reshape(k * N, D)[g]
        zp = z[p]
        q, grads, curvs = 0.0, [], []
        for d in range(D):
            qd, gd, cd = self._per_dim_terms(zp[:, d] - mu[:, d], inv_var[:, d], d, order)
            q = q + qd
            grads.append(gd)
            curvs.append(cd)
        wG = self.weight.reshape(-1)[g] * torch.exp(-0.5 * q)
        gather = lambda v: z.new_zeros(P * k).index_add(0, slot, v).view(P, k)  # noqa: E731
        F = gather(wG)
        if order == 0:
            return F, None, None
        dF = torch.stack([gather(-wG * gd) for gd in grads])
        d2F = self._second(F, order, second, lambda d: gather(wG * (grads[d] ** 2 - curvs[d])))
        return F, dF, d2F

    def _mlp(self, F, dF=None, d2F=None, second: Sequence[int] | None = None):
        """The MLP on the features, carrying first and pure second derivatives along (tanh chain rule);
        d2F holds the second derivatives along the dims in `second` (all by default)."""
        h, dh, d2h = F, dF, d2F
        pick = slice(None) if second is None else list(second)  # first derivatives paired with d2F
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            a = layer(h)
            da = dh @ layer.weight.T if dh is not None else None
            d2a = d2h @ layer.weight.T if d2h is not None else None
            if i == last:
                return a[:, 0], (None if da is None else da[..., 0].T), (None if d2a is None else d2a[..., 0].T)
            h = torch.tanh(a)
            if da is not None:
                s = 1 - h * h
                if d2a is not None:
                    d2h = s * d2a - 2 * h * s * da[pick] ** 2
                dh = s * da
        raise AssertionError("unreachable")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """u at points x of shape (P, D); differentiable in x and in the parameters."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x with shape (P, {self.dim}), got {tuple(x.shape)}")
        F, _, _ = self._embedding(x * self.scale + self.shift, 0)
        return self._mlp(F)[0]

    def derivatives(self, x: torch.Tensor, order: int = 2, second: Sequence[int] | None = None):
        """Closed form: u (P,), du/dx (P, D) and, for order 2, the pure second derivatives (P, D)
        along the dims in `second` (all by default; NaN along the others, which are not computed)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected x with shape (P, {self.dim}), got {tuple(x.shape)}")
        F, dF, d2F = self._embedding(x * self.scale + self.shift, order, second)
        u, du, d2u = self._mlp(F, dF, d2F, second)
        if d2u is not None:
            d2u = _spread_columns(d2u, range(self.dim) if second is None else second, self.dim)
            d2u = d2u * self.scale**2
        return u, du * self.scale, d2u


def _spread_columns(values: torch.Tensor, columns, width: int) -> torch.Tensor:
    """(P, len(columns)) -> (P, width), NaN in the columns not given (never differentiated through)."""
    by_column = dict(zip(columns, values.unbind(1)))
    return torch.stack([by_column[c] if c in by_column else torch.full_like(values[:, 0], math.nan)
                        for c in range(width)], dim=1)


def autograd_derivatives(model, x: torch.Tensor, order: int = 2, second: Sequence[int] | None = None):
    """u, du/dx and the pure second derivatives (along `second`, NaN elsewhere) by (double)
    backpropagation, for any model u(x)."""
    x = x.detach().requires_grad_(True)
    u = model(x).reshape(-1)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    if order < 2:
        return u, du, None
    wanted = range(x.shape[1]) if second is None else second
    d2u = torch.stack([torch.autograd.grad(du[:, d].sum(), x, create_graph=True)[0][:, d] for d in wanted], dim=1)
    return u, du, _spread_columns(d2u, wanted, x.shape[1])

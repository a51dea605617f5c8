"""Exact Gaussian processes with gpytorch kernels, float64, many outputs and restarts in one batch.

Outputs are split into groups; the outputs of a group share one anisotropic Matern-5/2 kernel and one
noise variance (the authors' GPy model with a multi-column Y), different groups are independent.
All groups and all restarts are one batch of shape (restarts, groups), so one L-BFGS-B run trains
them together; each group keeps the restart with the highest log marginal likelihood. Solves are dense
Cholesky factorisations (never gpytorch's CG/Lanczos path, which it takes above 800 points).
Training uses its own batched likelihood with an explicit gradient; the trained GPs' kernel matrices come
from gpytorch's MaternKernel (a test checks that the two kernels agree), and new points go through one
batched kernel and triangular solve for all groups (a test checks it against a direct solve per group).
"""
from __future__ import annotations

import math

import numpy as np
import torch

DTYPE = torch.float64


def _kernel(batch: tuple[int, ...], dims: int):
    from gpytorch.kernels import MaternKernel, ScaleKernel

    return ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=dims, batch_shape=torch.Size(batch)),
                       batch_shape=torch.Size(batch)).to(DTYPE)


SQRT5 = math.sqrt(5.0)
UNUSED = 1e8  # lengthscale held on an input a group does not read: it adds at most 1e-16 to r^2
CHUNK_BYTES = 2**21  # n x n float64 temporaries per chunk of GPs stay about this size (one GP at n = 500)


def matern52(z1: torch.Tensor, z2: torch.Tensor, sq2: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-scale Matern 5/2 of inputs already divided by their lengthscales, and the factor
    c(r) = 5/3 (1 + sqrt5 r) exp(-sqrt5 r) with dk/dlog(l_k) = c(r) (z1_k - z2_k)^2.
    `sq2`: the squared norms of z2, if already known."""
    sq1, sq2 = (z1**2).sum(-1), (z2**2).sum(-1) if sq2 is None else sq2
    r2 = (sq1[..., :, None] + sq2[..., None, :] - 2 * z1 @ z2.transpose(-1, -2)).clamp_min(0.0)
    r = torch.sqrt(r2)
    e = torch.exp(-SQRT5 * r)
    k = (1 + SQRT5 * r + (5.0 / 3.0) * r2) * e
    return k, (5.0 / 3.0) * (1 + SQRT5 * r) * e


class _Objective:
    """Negative log marginal likelihood of a batch of GP groups and its exact gradient.

    The gradient is written out (tr((alpha alpha^T - K^-1) dK/dtheta) / 2) instead of back-propagated,
    because autograd through a batch of n x n kernel matrices is several times slower on a CPU.
    Parameters per GP: log lengthscales (d), log outputscale, log(noise - noise_floor). `active` (G, d): the
    inputs each group reads; the lengthscales of the others stay at UNUSED.
    """

    def __init__(self, x: np.ndarray, Y: np.ndarray, groups: list[np.ndarray], restarts: int, noise_floor: float,
                 active: np.ndarray | None = None):
        self.x = torch.as_tensor(x, dtype=DTYPE)
        self.Y = torch.as_tensor(Y, dtype=DTYPE)
        self.groups, self.R, self.floor = groups, restarts, noise_floor
        self.G, (self.n, self.d) = len(groups), x.shape
        self.active = np.ones((self.G, self.d), dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if self.active.shape != (self.G, self.d) or not self.active.any(1).all():
            raise ValueError(f"active inputs must be a ({self.G}, {self.d}) mask with at least one input per group")
        self.counts = torch.tensor([len(c) for c in groups], dtype=DTYPE)
        # right-hand sides of each group, zero-padded to the largest group
        width = max(len(c) for c in groups)
        self.rhs = torch.zeros(self.G, self.n, width, dtype=DTYPE)
        for g, cols in enumerate(groups):
            self.rhs[g, :, : len(cols)] = self.Y[:, cols]

    def unpack(self, theta: np.ndarray):
        t = torch.as_tensor(theta, dtype=DTYPE).reshape(self.R, self.G, self.d + 2)
        return torch.exp(t[..., : self.d]), torch.exp(t[..., self.d]), self.floor + torch.exp(t[..., self.d + 1])

    def mll_and_grad(self, theta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        ls, scale, noise = (v.reshape(self.R * self.G, *v.shape[2:]) for v in self.unpack(theta))
        rhs = self.rhs.repeat(self.R, 1, 1)
        counts = self.counts.repeat(self.R)
        # a few GPs at a time: small temporaries stay in the allocator's heap instead of being
        # mapped and unmapped on every call, which cost more system time than the algebra itself
        step = max(1, CHUNK_BYTES // (8 * self.n * self.n))
        parts = [self._batch_mll_and_grad(ls[i:i + step], scale[i:i + step], noise[i:i + step], rhs[i:i + step],
                                          counts[i:i + step]) for i in range(0, len(ls), step)]
        mll = torch.cat([m for m, _ in parts]).reshape(self.R, self.G)
        grad = torch.cat([g for _, g in parts]).reshape(self.R, self.G, self.d + 2)
        return mll, grad

    def _batch_mll_and_grad(self, ls, scale, noise, rhs, m):
        z = self.x / ls[..., None, :]  # (B, n, d)
        k, c = matern52(z, z)
        eye = torch.eye(self.n, dtype=DTYPE)
        K = scale[..., None, None] * k + (noise[..., None, None] + 1e-10) * eye
        L, info = torch.linalg.cholesky_ex(K)
        bad = info > 0
        if bad.any():
            L = torch.where(bad[..., None, None], torch.linalg.cholesky(K + 1e-3 * eye), L)
        alpha = torch.cholesky_solve(rhs, L)  # (B, n, w)
        logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
        fit = (rhs * alpha).sum((-2, -1))
        mll = -0.5 * fit - 0.5 * m * (logdet + self.n * math.log(2 * math.pi))
        W = alpha @ alpha.transpose(-1, -2) - m[:, None, None] * torch.cholesky_inverse(L)
        A = 0.5 * W * scale[..., None, None] * c
        a = A.sum(-1)  # (B, n)
        g_ls = 2 * (a[..., None] * z**2).sum(-2) - 2 * (z * (A @ z)).sum(-2)
        g_scale = 0.5 * (W * scale[..., None, None] * k).sum((-2, -1))
        g_noise = 0.5 * (noise - self.floor) * torch.diagonal(W, dim1=-2, dim2=-1).sum(-1)
        grad = torch.cat([g_ls, g_scale[..., None], g_noise[..., None]], -1)
        mll = torch.where(bad, torch.full_like(mll, -1e10), mll)
        grad = torch.where(bad[..., None], torch.zeros_like(grad), grad)
        return mll, grad

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        mll, grad = self.mll_and_grad(theta)
        norm = self.n * float(self.counts.sum())
        return -float(mll.sum()) / norm, -grad.reshape(-1).numpy() / norm

    def initial(self, rng: np.random.Generator) -> np.ndarray:
        """Restart 0 from a neutral guess (lengthscales sqrt of the inputs read), the others drawn
        log-uniformly around it."""
        R, G, d = self.R, self.G, self.d
        neutral = 0.5 * np.log(self.active.sum(1))[:, None]  # (G, 1)
        theta = np.empty((R, G, d + 2))
        theta[..., :d] = neutral + rng.uniform(np.log(0.1), np.log(3.0), size=(R, G, d))
        theta[..., d] = rng.uniform(np.log(0.3), np.log(3.0), size=(R, G))
        theta[..., d + 1] = rng.uniform(np.log(1e-6), np.log(1e-2), size=(R, G))
        theta[0, :, :d] = neutral
        theta[0, :, d:] = [0.0, np.log(1e-3)]
        theta[..., :d][:, ~self.active] = np.log(UNUSED)
        return theta.ravel()

    def bounds(self) -> list[tuple[float, float]]:
        """L-BFGS-B bounds in the order of theta; an unused input's lengthscale is pinned at UNUSED."""
        free = [(np.log(1e-2), np.log(1e4))]
        pinned = [(np.log(UNUSED), np.log(UNUSED))]
        tail = [(np.log(1e-4), np.log(1e4)), (np.log(1e-12), np.log(10.0))]
        per_group = [[free[0] if a else pinned[0] for a in row] + tail for row in self.active]
        return [b for _ in range(self.R) for group in per_group for b in group]


def fit_gps(x: np.ndarray, Y: np.ndarray, groups: list[np.ndarray], restarts: int = 10, max_iter: int = 1000,
            noise_floor: float = 1e-8, seed: int = 0, active: np.ndarray | None = None) -> dict[str, torch.Tensor]:
    """Train on standardised inputs x (n, d) and targets Y (n, m) with L-BFGS-B (as GPy does); all groups
    and restarts in one batch. `active` (G, d) bool: the inputs each group's kernel reads (default all).
    Returns the best restart per group: lengthscale (G, 1, d), outputscale (G,), noise (G,), mll (G,)."""
    from scipy.optimize import minimize

    obj = _Objective(x, Y, groups, restarts, noise_floor, active)
    theta0 = obj.initial(np.random.default_rng(seed))
    res = minimize(obj, theta0, jac=True, method="L-BFGS-B", bounds=obj.bounds(),
                   options={"maxiter": max_iter, "maxfun": 2 * max_iter})
    with torch.no_grad():
        mll, _ = obj.mll_and_grad(res.x)
        ls, scale, noise = obj.unpack(res.x)
        best = mll.argmax(0)
        g = torch.arange(len(groups))
        return {"lengthscale": ls[best, g][:, None, :].clone(), "outputscale": scale[best, g].clone(),
                "noise": noise[best, g].clone(), "mll": mll[best, g].clone(),
                "iterations": torch.tensor(res.nit)}


class GPPredictor:
    """Posterior of trained GPs: mean and variance of every output at new standardised inputs."""

    def __init__(self, x: np.ndarray, Y: np.ndarray, groups: list[np.ndarray], hyper: dict[str, torch.Tensor]):
        self.x = torch.as_tensor(x, dtype=DTYPE)
        self.Y = torch.as_tensor(Y, dtype=DTYPE)
        self.groups = groups
        G, d = len(groups), self.x.shape[1]
        self.kernel = _kernel((G,), d)
        with torch.no_grad():
            self.kernel.base_kernel.lengthscale = hyper["lengthscale"]
            self.kernel.outputscale = hyper["outputscale"]
        self.noise = hyper["noise"]
        # 1 unless calibrated (see `loo_variance_factor`); scales the whole predictive variance of a group
        self.variance_factor = hyper.get("variance_factor", torch.ones(G, dtype=DTYPE))
        with torch.no_grad():
            eye = torch.eye(len(self.x), dtype=DTYPE)
            K = self.kernel(self.x).to_dense() + (self.noise[:, None, None] + 1e-10) * eye
            self.L = torch.linalg.cholesky(K)
            self.alpha = [torch.cholesky_solve(self.Y[:, cols], self.L[g]) for g, cols in enumerate(groups)]

    @torch.no_grad()
    def leave_one_out(self) -> tuple[np.ndarray, np.ndarray]:
        """Closed-form leave-one-out mean and variance (n, m) at the training inputs (same hyperparameters):
        mean_i = y_i - [K^-1 y]_i / [K^-1]_ii, variance_i = 1 / [K^-1]_ii, times the group's variance factor."""
        mean, var = torch.zeros_like(self.Y), torch.zeros_like(self.Y)
        for g, cols in enumerate(self.groups):
            inverse_diagonal = torch.diagonal(torch.cholesky_inverse(self.L[g]))[:, None]
            mean[:, cols] = self.Y[:, cols] - self.alpha[g] / inverse_diagonal
            var[:, cols] = self.variance_factor[g] / inverse_diagonal
        return mean.numpy(), var.numpy()

    @torch.no_grad()
    def loo_variance_factor(self) -> torch.Tensor:
        """Per group, the mean of (leave-one-out residual)^2 / (leave-one-out variance) over the training
        points and the group's outputs: both are closed form, r_i = [K^-1 y]_i / [K^-1]_ii and
        v_i = 1 / [K^-1]_ii. Multiplying the predictive variance by it makes the standardised LOO residuals
        have unit variance, which the maximum-likelihood hyperparameters alone do not ensure."""
        factors = []
        for g in range(len(self.groups)):
            inverse_diagonal = torch.diagonal(torch.cholesky_inverse(self.L[g]))
            residual = self.alpha[g] / inverse_diagonal[:, None]
            factors.append(float((residual**2 * inverse_diagonal[:, None]).mean()))
        return torch.tensor(factors, dtype=DTYPE)

    @torch.no_grad()
    def predict(self, x_new: np.ndarray, observation_noise: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (n*, m); with `observation_noise` the learned noise is added to the variance.
        All groups at once from the caches made here: one batched kernel, one batched triangular solve."""
        if not hasattr(self, "_scaled_x"):
            self._prepare_prediction()
        xs = torch.as_tensor(np.atleast_2d(x_new), dtype=DTYPE)
        scale = self.kernel.outputscale.detach()
        k, _ = matern52(xs / self._lengthscale, self._scaled_x, self._squared_norms)
        Ks = scale[:, None, None] * k  # (G, n*, n)
        v = torch.linalg.solve_triangular(self.L, Ks.transpose(-1, -2), upper=False)  # (G, n, n*)
        latent = (scale[:, None] - (v**2).sum(-2)).clamp_min(0.0)  # Matern: k(x, x) = outputscale
        var = self.variance_factor[:, None] * (latent + (self.noise[:, None] if observation_noise else 0.0))
        mean = torch.zeros(len(xs), self.Y.shape[1], dtype=DTYPE)
        mean[:, self._columns] = (Ks @ self._alpha).transpose(0, 1)[:, self._used]
        return mean.numpy(), var[self._group_of_column].T.numpy()

    def _prepare_prediction(self) -> None:
        ls = self.kernel.base_kernel.lengthscale.detach()  # (G, 1, d)
        self._lengthscale = ls
        self._scaled_x = self.x / ls  # (G, n, d)
        self._squared_norms = (self._scaled_x**2).sum(-1)
        width = max(len(c) for c in self.groups)
        self._alpha = torch.zeros(len(self.groups), len(self.x), width, dtype=DTYPE)
        self._used = torch.zeros(len(self.groups), width, dtype=torch.bool)
        self._group_of_column = torch.zeros(self.Y.shape[1], dtype=torch.long)
        for g, cols in enumerate(self.groups):
            self._alpha[g, :, : len(cols)] = self.alpha[g]
            self._used[g, : len(cols)] = True
            self._group_of_column[torch.as_tensor(cols)] = g
        self._columns = torch.as_tensor(np.concatenate(self.groups))

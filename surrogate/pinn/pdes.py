"""The benchmark PDEs as data plus functions, and their reference solutions.

Every problem has coordinates in a fixed column order (space first, time last, as in deepxde), a
box domain, a residual written in terms of u and its first and pure second derivatives, the loss
terms it needs (initial values, Dirichlet boundary values, or exact periodicity) and a reference:
closed form where one exists, otherwise a solver in this module (Cole-Hopf for Burgers, Fourier
ETDRK4 for Allen-Cahn). Residuals take torch tensors; exact solutions take numpy or torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from surrogate.core.registry import Registry

PROBLEMS: Registry[type["Problem"]] = Registry("PDE")


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


@dataclass
class Problem:
    """A PDE on a box. Subclasses set the class attributes and the functions."""

    name = "problem"
    coords: tuple[str, ...] = ()
    default_bounds: dict[str, tuple[float, float]] = field(default_factory=dict)
    default_params: dict[str, float] = field(default_factory=dict)
    order = 2                      # highest derivative the residual uses
    second = None                  # coordinates whose pure second derivative it uses; None = all
    periodic: tuple[str, ...] = ()  # coordinates in which u is exactly periodic

    params: dict[str, float] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)

    def __post_init__(self):
        unknown = sorted(set(self.params) - set(self.default_params))
        if unknown:
            allowed = ", ".join(self.default_params) or "none"
            raise ValueError(f"pde {self.name}: unknown parameter(s) {unknown}; allowed: {allowed}")
        self.params = {**self.default_params, **self.params}
        bad = sorted(set(self.bounds) - set(self.coords))
        if bad:
            raise ValueError(f"pde {self.name}: domain has unknown coordinate(s) {bad}; "
                             f"allowed: {', '.join(self.coords)}")
        self.bounds = {c: tuple(map(float, self.bounds.get(c, self.default_bounds[c]))) for c in self.coords}
        for c, (lo, hi) in self.bounds.items():
            if not lo < hi:
                raise ValueError(f"pde {self.name}: domain.{c} = [{lo}, {hi}] needs min < max")

    # geometry ------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.coords)

    @property
    def time_dependent(self) -> bool:
        return self.coords[-1] == "t"

    @property
    def space(self) -> tuple[str, ...]:
        return self.coords[:-1] if self.time_dependent else self.coords

    @property
    def second_dims(self) -> tuple[int, ...]:
        """Columns of d2u the residual reads; the others need not be computed (they may hold NaN)."""
        if self.order < 2:
            return ()
        return tuple(i for i, c in enumerate(self.coords) if self.second is None or c in self.second)

    @property
    def lower(self) -> np.ndarray:
        return np.array([self.bounds[c][0] for c in self.coords])

    @property
    def upper(self) -> np.ndarray:
        return np.array([self.bounds[c][1] for c in self.coords])

    # physics -------------------------------------------------------------
    def residual(self, x: torch.Tensor, u: torch.Tensor, du: torch.Tensor, d2u: torch.Tensor | None) -> torch.Tensor:
        """PDE residual at points x (P, D) from u (P,), du (P, D) and the pure second derivatives d2u (P, D)."""
        raise NotImplementedError

    def exact(self, x):
        raise NotImplementedError(f"{self.name} has no closed-form solution; use its reference data")

    def initial(self, x):
        """u at t = t0 (x includes the time column)."""
        return self.exact(x)

    def boundary(self, x):
        """Dirichlet value on the spatial boundary."""
        return self.exact(x)

    @property
    def loss_terms(self) -> tuple[str, ...]:
        """Which data terms the loss has besides the residual."""
        terms = ("initial",) if self.time_dependent else ()
        spatial_free = [c for c in self.space if c not in self.periodic]
        return terms + (("boundary",) if spatial_free else ())

    # sampling ------------------------------------------------------------
    def _uniform(self, n: int, gen: torch.Generator, dtype) -> torch.Tensor:
        lo = torch.as_tensor(self.lower, dtype=dtype)
        hi = torch.as_tensor(self.upper, dtype=dtype)
        return lo + (hi - lo) * torch.rand(n, self.dim, generator=gen, dtype=dtype)

    def sample_interior(self, n: int, gen: torch.Generator, dtype=torch.float64) -> torch.Tensor:
        return self._uniform(n, gen, dtype)

    def sample_initial(self, n: int, gen: torch.Generator, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._uniform(n, gen, dtype)
        x[:, -1] = self.bounds["t"][0]
        return x, self.initial(x)

    def sample_boundary(self, n: int, gen: torch.Generator, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
        """n points spread evenly over the faces of the spatial box that are not periodic."""
        faces = [(i, side) for i, c in enumerate(self.space) if c not in self.periodic for side in (0, 1)]
        per = max(1, n // len(faces))
        xs = []
        for i, side in faces:
            x = self._uniform(per, gen, dtype)
            x[:, i] = self.bounds[self.space[i]][side]
            xs.append(x)
        x = torch.cat(xs)
        return x, self.boundary(x)

    # evaluation grid -----------------------------------------------------
    def test_grid(self, sizes: dict[str, int]) -> dict[str, np.ndarray]:
        """1D coordinate arrays of the evaluation grid; a periodic coordinate leaves out its right end."""
        grid = {}
        for c in [c for c in self.coords if c in sizes]:
            lo, hi = self.bounds[c]
            n = sizes[c]
            grid[c] = np.linspace(lo, hi, n, endpoint=c not in self.periodic)
        return grid

    def reference(self, grid: dict[str, np.ndarray], **solver: Any) -> np.ndarray:
        """u on the grid, array dims in CF order (t, y, x)."""
        return self.exact(grid_points(grid, self.coords)).reshape(grid_shape(grid, self.coords))


def cf_order(coords: tuple[str, ...]) -> tuple[str, ...]:
    """Dimension order for NetCDF: T, then Y, then X (CF convention)."""
    rank = {"t": 0, "y": 1, "x": 2}
    return tuple(sorted(coords, key=lambda c: rank[c]))


def grid_shape(grid: dict[str, np.ndarray], coords: tuple[str, ...]) -> tuple[int, ...]:
    return tuple(len(grid[c]) for c in cf_order(coords))


def grid_points(grid: dict[str, np.ndarray], coords: tuple[str, ...]) -> np.ndarray:
    """All grid points as rows (columns in `coords` order), enumerated in CF dimension order."""
    dims = cf_order(coords)
    mesh = np.meshgrid(*[grid[c] for c in dims], indexing="ij")
    by_name = dict(zip(dims, mesh))
    return np.stack([by_name[c].ravel() for c in coords], axis=1)


# ---------------------------------------------------------------- problems
@PROBLEMS.register("helmholtz")
@dataclass
class Helmholtz(Problem):
    """u_xx + u_yy + k^2 u = q on [-1,1]^2, u = sin(a1 pi x) sin(a2 pi y), Dirichlet from u."""

    name = "helmholtz"
    coords: tuple[str, ...] = ("x", "y")
    default_bounds: dict = field(default_factory=lambda: {"x": (-1.0, 1.0), "y": (-1.0, 1.0)})
    default_params: dict = field(default_factory=lambda: {"a1": 1.0, "a2": 4.0, "k": 1.0})

    def exact(self, x):
        m = _lib(x)
        p = self.params
        return m.sin(p["a1"] * math.pi * x[:, 0]) * m.sin(p["a2"] * math.pi * x[:, 1])

    def source(self, x):
        p = self.params
        return (-(p["a1"] * math.pi) ** 2 - (p["a2"] * math.pi) ** 2 + p["k"] ** 2) * self.exact(x)

    def residual(self, x, u, du, d2u):
        return d2u[:, 0] + d2u[:, 1] + self.params["k"] ** 2 * u - self.source(x)


@PROBLEMS.register("klein_gordon")
@dataclass
class KleinGordon(Problem):
    """u_tt - (u_xx + u_yy) + u^2 = f, u = (x + y) cos(2t) + x y sin(2t); IC u(t=0) and Dirichlet, no u_t(0)."""

    name = "klein_gordon"
    coords: tuple[str, ...] = ("x", "y", "t")
    default_bounds: dict = field(default_factory=lambda: {"x": (-1.0, 1.0), "y": (-1.0, 1.0), "t": (0.0, 10.0)})
    default_params: dict = field(default_factory=lambda: {"k": 2.0})

    def exact(self, x):
        m = _lib(x)
        k = self.params["k"]
        X, Y, T = x[:, 0], x[:, 1], x[:, 2]
        return (X + Y) * m.cos(k * T) + X * Y * m.sin(k * T)

    def residual(self, x, u, du, d2u):
        u_ex = self.exact(x)
        f = u_ex**2 - self.params["k"] ** 2 * u_ex
        return d2u[:, 2] - (d2u[:, 0] + d2u[:, 1]) + u**2 - f


@PROBLEMS.register("flow_mixing")
@dataclass
class FlowMixing(Problem):
    """u_t + a u_x + b u_y = 0 with the rotating vortex (a, b) = (v_t / v_max)(-y/r, x/r)."""

    name = "flow_mixing"
    coords: tuple[str, ...] = ("x", "y", "t")
    default_bounds: dict = field(default_factory=lambda: {"x": (-4.0, 4.0), "y": (-4.0, 4.0), "t": (0.0, 4.0)})
    default_params: dict = field(default_factory=lambda: {"v_max": 0.385})
    order = 1

    def _omega(self, X, Y):
        """Angular velocity v_t / (r v_max), with its limit 1 / v_max at r = 0."""
        m = _lib(X)
        r2 = X**2 + Y**2
        # floored so that sqrt keeps a finite derivative at the centre; tanh(r)/r -> 1 there
        r = m.sqrt(r2.clamp_min(1e-30) if m is torch else np.maximum(r2, 1e-30))
        return m.tanh(r) / r / m.cosh(r) ** 2 / self.params["v_max"]

    def velocity(self, x):
        X, Y = x[:, 0], x[:, 1]
        w = self._omega(X, Y)
        return -w * Y, w * X

    def exact(self, x):
        m = _lib(x)
        X, Y, T = x[:, 0], x[:, 1], x[:, 2]
        w = self._omega(X, Y)
        return -m.tanh(0.5 * Y * m.cos(w * T) - 0.5 * X * m.sin(w * T))

    def residual(self, x, u, du, d2u):
        a, b = self.velocity(x)
        return du[:, 2] + a * du[:, 0] + b * du[:, 1]


@PROBLEMS.register("burgers")
@dataclass
class Burgers(Problem):
    """u_t + u u_x = nu u_xx on [-1,1] x [0,1], u(0,x) = -sin(pi x), u(+-1,t) = 0; nu = 0.01/pi by default."""

    name = "burgers"
    coords: tuple[str, ...] = ("x", "t")
    default_bounds: dict = field(default_factory=lambda: {"x": (-1.0, 1.0), "t": (0.0, 1.0)})
    default_params: dict = field(default_factory=lambda: {"nu": 0.01 / math.pi})
    second = ("x",)

    def __post_init__(self):
        super().__post_init__()
        if self.bounds["x"] != (-1.0, 1.0):
            raise ValueError("pde burgers: the Cole-Hopf reference needs domain.x = [-1, 1]")

    def initial(self, x):
        return -_lib(x).sin(math.pi * x[:, 0])

    def boundary(self, x):
        return 0.0 * x[:, 0]

    def residual(self, x, u, du, d2u):
        return du[:, 1] + u * du[:, 0] - self.params["nu"] * d2u[:, 0]

    def reference(self, grid, quadrature_nodes: int = 400, **_):
        X, T = np.meshgrid(grid["x"], grid["t"], indexing="xy")  # (nt, nx)
        return burgers_cole_hopf(X, T, self.params["nu"], quadrature_nodes)


@PROBLEMS.register("allen_cahn")
@dataclass
class AllenCahn(Problem):
    """u_t - eps u_xx + 5 u^3 - 5 u = 0 on [-1,1) x [0,1], u(0,x) = x^2 cos(pi x), periodic in x."""

    name = "allen_cahn"
    coords: tuple[str, ...] = ("x", "t")
    default_bounds: dict = field(default_factory=lambda: {"x": (-1.0, 1.0), "t": (0.0, 1.0)})
    default_params: dict = field(default_factory=lambda: {"eps": 1e-4, "a": 5.0})
    periodic: tuple[str, ...] = ("x",)
    second = ("x",)

    def initial(self, x):
        return x[:, 0] ** 2 * _lib(x).cos(math.pi * x[:, 0])

    def residual(self, x, u, du, d2u):
        a = self.params["a"]
        return du[:, 1] - self.params["eps"] * d2u[:, 0] + a * u**3 - a * u

    def reference(self, grid, modes: int = 4096, dt: float = 1e-3, **_):
        lo, hi = self.bounds["x"]
        t = grid["t"]
        xs = np.linspace(lo, hi, modes, endpoint=False)
        u0 = xs**2 * np.cos(math.pi * xs)
        a = self.params["a"]
        U = etdrk4_periodic(u0, hi - lo, self.params["eps"], lambda u: a * u - a * u**3, t, dt)
        return np.stack([np.interp(grid["x"], xs, row, period=hi - lo) if modes % len(grid["x"])
                         else row[:: modes // len(grid["x"])] for row in U])


def make_problem(name: str, params: dict[str, float] | None = None,
                 domain: dict[str, tuple[float, float]] | None = None) -> Problem:
    return PROBLEMS[name](params=dict(params or {}), bounds=dict(domain or {}))


# ------------------------------------------------------- reference solvers
def burgers_cole_hopf(x: np.ndarray, t: np.ndarray, nu: float, nodes: int = 400) -> np.ndarray:
    """Viscous Burgers with u(0,x) = -sin(pi x) via the Cole-Hopf integral and Gauss-Hermite quadrature.

    u = -int sin(pi(x - eta)) f(x - eta) exp(-eta^2 / 4 nu t) d eta / int f(x - eta) exp(...) d eta,
    f(y) = exp(-cos(pi y) / (2 pi nu)); eta = 2 sqrt(nu t) z turns both into Gauss-Hermite sums.
    The exponents are shifted by their maximum, since f spans e^(+-1/(2 pi nu)).
    """
    x, t = np.broadcast_arrays(np.asarray(x, float), np.asarray(t, float))
    from scipy.special import roots_hermite  # stable for hundreds of nodes, unlike numpy's hermgauss

    z, w = roots_hermite(nodes)
    keep = w > 0
    z, logw = z[keep], np.log(w[keep])
    out = -np.sin(math.pi * x)
    later = t > 0
    y = x[later][:, None] - 2.0 * np.sqrt(nu * t[later])[:, None] * z[None, :]
    expo = logw[None, :] - np.cos(math.pi * y) / (2 * math.pi * nu)
    weight = np.exp(expo - expo.max(axis=1, keepdims=True))
    out[later] = -(weight * np.sin(math.pi * y)).sum(1) / weight.sum(1)
    return out


def burgers_finite_difference(nx: int, nu: float, t_out: np.ndarray, cfl: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """A plain check solver: conservative central differences, classic RK4 in time, u(+-1) = 0.

    Second order in space; used only to test the Cole-Hopf reference."""
    x = np.linspace(-1.0, 1.0, nx)
    dx = x[1] - x[0]
    dt = cfl * min(dx, dx * dx / nu)

    def rhs(u):
        f = np.zeros_like(u)
        f[1:-1] = -(u[2:] ** 2 - u[:-2] ** 2) / (4 * dx) + nu * (u[2:] - 2 * u[1:-1] + u[:-2]) / dx**2
        return f

    u = -np.sin(math.pi * x)
    u[0] = u[-1] = 0.0
    out, t = [], 0.0
    for target in t_out:
        while t < target - 1e-14:
            h = min(dt, target - t)
            k1 = rhs(u)
            k2 = rhs(u + 0.5 * h * k1)
            k3 = rhs(u + 0.5 * h * k2)
            k4 = rhs(u + h * k3)
            u = u + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        out.append(u.copy())
    return x, np.array(out)


def etdrk4_periodic(u0: np.ndarray, length: float, eps: float, nonlinear, t_out: np.ndarray,
                    dt: float) -> np.ndarray:
    """u_t = eps u_xx + N(u), periodic, Fourier in space, ETDRK4 in time (Cox-Matthews; coefficients by
    the contour integral of Kassam & Trefethen 2005). Returns u at the times t_out (which start at 0)."""
    n = len(u0)
    k = 2 * math.pi / length * np.fft.fftfreq(n, d=1.0 / n)
    L = -eps * k**2
    E, E2 = np.exp(dt * L), np.exp(dt * L / 2)
    roots = np.exp(1j * math.pi * (np.arange(1, 33) - 0.5) / 32)
    LR = dt * L[:, None] + roots[None, :]
    Q = dt * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = dt * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, axis=1))
    f2 = dt * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, axis=1))
    f3 = dt * np.real(np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, axis=1))
    Nf = lambda v: np.fft.fft(nonlinear(np.real(np.fft.ifft(v))))  # noqa: E731
    v = np.fft.fft(u0)
    out, t = [], 0.0
    for target in t_out:
        steps = int(round((target - t) / dt))
        if abs(steps * dt - (target - t)) > 1e-9 * max(1.0, target):
            raise ValueError(f"output time {target} is not a multiple of dt={dt} after {t}")
        for _ in range(steps):
            Nv = Nf(v)
            a = E2 * v + Q * Nv
            Na = Nf(a)
            b = E2 * v + Q * Na
            Nb = Nf(b)
            c = E2 * a + Q * (2 * Nb - Nv)
            Nc = Nf(c)
            v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + Nc * f3
        t = target
        out.append(np.real(np.fft.ifft(v)))
    return np.array(out)

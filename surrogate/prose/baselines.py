"""Equation-based predictors on the points the model sees: nominal equation, pysindy, decoded equations.

All three integrate a vector field from the last observed (noisy) state with the same batched RK4
as the data generator. Decoded systems differ per sample; samples whose systems share a tree (up to
their numbers) are integrated together, the numbers becoming per-sample parameters.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np

from surrogate.prose.odes import BLOW_UP, SUBSTEPS, Family
from surrogate.prose.symbols import Node, System, compile_system, param


def rk4(field: Callable[[np.ndarray], np.ndarray], u0: np.ndarray, times: np.ndarray,
        substeps: int = SUBSTEPS) -> np.ndarray:
    """Batched classical RK4 on a uniform grid: u0 (B, d) -> (B, T, d); diverged rows become NaN."""
    u = np.array(u0, dtype=float)
    steps = np.diff(times)
    h = steps[0] / substeps
    out = np.empty((u.shape[0], len(times), u.shape[1]))
    out[:, 0] = u
    with np.errstate(all="ignore"):
        for n in range(1, len(times)):
            for _ in range(substeps):
                k1 = field(u)
                k2 = field(u + 0.5 * h * k1)
                k3 = field(u + 0.5 * h * k2)
                k4 = field(u + h * k3)
                u = u + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            bad = ~np.all(np.isfinite(u) & (np.abs(u) < BLOW_UP), axis=1)
            u[bad] = np.nan
            out[:, n] = u
    return out


def _numbers_as_parameters(system: System) -> tuple[System, list[float]]:
    """The system with its k-th number replaced by parameter ``c<k>``, and the numbers."""
    values: list[float] = []

    def walk(n: Node) -> Node:
        if n.op == "const":
            values.append(n.value)
            return param(f"c{len(values) - 1}")
        return Node(n.op, tuple(walk(c) for c in n.children), n.value, n.name) if n.children else n

    return tuple(walk(t) for t in system), values


def group_by_tree(systems: Sequence[System]) -> list[tuple[System, np.ndarray, np.ndarray]]:
    """Systems with the same tree up to their numbers: (tree with parameters c<k>, sample indices, numbers (G, K))."""
    groups: dict[System, tuple[list[int], list[list[float]]]] = {}
    for i, system in enumerate(systems):
        shape, values = _numbers_as_parameters(system)
        rows, vals = groups.setdefault(shape, ([], []))
        rows.append(i)
        vals.append(values)
    return [(shape, np.array(rows), np.array(vals, dtype=float).reshape(len(rows), -1))
            for shape, (rows, vals) in groups.items()]


def grouped_fields(systems: Sequence[System]) -> list[tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]]:
    """Group systems with the same tree; returns (sample indices, batched field of their states)."""
    out = []
    for shape, rows, v in group_by_tree(systems):
        f = compile_system(shape)
        params = {f"c{k}": v[:, k] for k in range(v.shape[1])}
        out.append((rows, lambda u, f=f, params=params: f(u, params)))
    return out


def systems_rhs(systems: Sequence[System], points: np.ndarray) -> np.ndarray:
    """Each system's vector field at its own points: points (B, P, d) -> (B, P, d)."""
    out = np.full(points.shape, np.nan)
    for rows, field in grouped_fields(systems):
        p = np.moveaxis(points[rows], 1, 0)  # (P, G, d): the parameters broadcast over the group axis
        out[rows] = np.moveaxis(field(p), 0, 1)
    return out


def integrate_systems(systems: Sequence[System | None], u0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Integrate each sample's own system (None: no valid system, NaN rows)."""
    out = np.full((len(systems), len(times), u0.shape[1]), np.nan)
    valid = [i for i, s in enumerate(systems) if s is not None]
    for rows, field in grouped_fields([systems[i] for i in valid]):
        idx = np.array(valid)[rows]
        out[idx] = rk4(field, u0[idx], times)
    return out


def nominal(family: Family, u0: np.ndarray, times: np.ndarray) -> np.ndarray:
    """The family's nominal equation (ignores the parameters the data came from)."""
    params = np.repeat(family.nominal_values[None], len(u0), axis=0)
    return rk4(lambda u: family.vector_field(u, params), u0, times)


class SindyFits:
    """One pysindy model per sample (polynomial library, STLSQ, smoothed finite differences)."""

    def __init__(self, degree: int = 2, threshold: float = 0.1):
        self.degree, self.threshold = degree, threshold

    def fit(self, t: np.ndarray, u: np.ndarray) -> SindyFits:
        """t (N,), u (B, N, d): one fit per trajectory."""
        try:
            import pysindy as ps
        except ImportError as err:  # pragma: no cover - the extra is installed in the dev environment
            raise ImportError("the pysindy baseline needs pysindy: pip install 'surrogate[prose]'") from err
        self.library_ = ps.PolynomialLibrary(degree=self.degree)
        coefficients = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for x in u:
                model = ps.SINDy(optimizer=ps.STLSQ(threshold=self.threshold, alpha=0.05),
                                 feature_library=ps.PolynomialLibrary(degree=self.degree),
                                 differentiation_method=ps.SmoothedFiniteDifference(smoother_kws={"window_length": 5}))
                model.fit(np.asarray(x, dtype=float), t=np.asarray(t, dtype=float))
                coefficients.append(np.asarray(model.coefficients()))
            self.library_.fit(np.zeros((2, u.shape[-1])))
        self.coefficients_ = np.stack(coefficients)  # (B, d, F)
        # the library's monomials as an exponent table: evaluating it in numpy is ~1000x faster than transform
        self.powers_ = np.asarray(self.library_.powers_, dtype=float)
        probe = np.random.default_rng(0).standard_normal((4, u.shape[-1]))
        if not np.allclose(self._features(probe), np.asarray(self.library_.transform(probe))):
            raise RuntimeError("pysindy's PolynomialLibrary changed its feature layout; update SindyFits._features")
        return self

    def _features(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.prod(x[..., None, :] ** self.powers_, axis=-1)

    def rhs(self, points: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Vector field of each fit at its states: points (B, ..., d)."""
        c = self.coefficients_ if rows is None else self.coefficients_[rows]
        shape = points.shape
        theta = self._features(points.reshape(shape[0], -1, shape[-1]))
        with np.errstate(all="ignore"):
            return np.einsum("bpf,bdf->bpd", theta, c).reshape(shape)

    def integrate(self, u0: np.ndarray, times: np.ndarray) -> np.ndarray:
        return rk4(lambda u: self.rhs(u[:, None])[:, 0], u0, times)

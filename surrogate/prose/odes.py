"""The PROSE families of three-dimensional chaotic ODEs and a batched RK4 generator.

Each family is written once, as signed additive terms whose leaves are variables, fixed numbers
and named parameters; that one description gives the numeric vector field (compiled to a small
stack machine), the full equation's tokens and the skeleton with placeholders. Term order, the
placement of signs and the fixed numbers follow the official PROSE ODE generator
(felix-lyx/prose, ``prose_ode/symbolicregression/envs/generators.py``), so token sequences and the
add/delete corruption match the paper's.

Deviation from the paper, for speed: trajectories come from fixed-step RK4 (8 substeps per output
interval, all equations of a family at once) instead of per-trajectory ``solve_ivp`` (BDF/LSODA/RK45,
rtol 1e-5); the tests check RK4 against ``solve_ivp``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Mapping, Sequence

import numpy as np

from surrogate.prose.symbols import (
    Node,
    System,
    Terms,
    assemble,
    bind,
    compile_system,
    param,
    product,
    round_significant,
    skeleton,
    var,
)

T_END = 6.0
N_TIMES = 192  # t = linspace(0, 6, 192), dt = 6/191
N_OBSERVED = 64  # t[:64] in [0, 1.98] observed; t[64:] in [2.01, 6] predicted
SUBSTEPS = 8  # RK4 steps per output interval
IC_LOW, IC_HIGH = -2.0, 2.0
BLOW_UP = 1e3  # trajectories leaving |u| < 1e3 are rejected, as in the paper
PARAMETER_SPREAD = 0.1  # parameters ~ U[c - 0.1|c|, c + 0.1|c|]
NOISE_LEVEL = 0.02


def time_grid() -> np.ndarray:
    """The paper's 192 output times on [0, 6]."""
    return np.linspace(0.0, T_END, N_TIMES)


@dataclass(frozen=True, eq=False)
class Family:
    """One ODE family: signed terms per component, parameters with their nominal values."""

    name: str
    title: str
    nominal: Mapping[str, float]
    terms: Terms
    reference: str
    _field: Callable = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_field", compile_system(assemble(self.terms)))

    @property
    def dim(self) -> int:
        return len(self.terms)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(self.nominal)

    @property
    def nominal_values(self) -> np.ndarray:
        return np.array([self.nominal[k] for k in self.parameter_names])

    @property
    def system(self) -> System:
        """The template tree, parameters as named leaves."""
        return assemble(self.terms)

    def _values(self, values: Sequence[float] | Mapping[str, float] | np.ndarray) -> dict[str, float]:
        if isinstance(values, Mapping):
            return {k: float(values[k]) for k in self.parameter_names}
        values = np.asarray(values, dtype=float)
        if values.shape != (len(self.nominal),):
            raise ValueError(f"{self.name}: expected {len(self.nominal)} parameter values "
                             f"{self.parameter_names}, got shape {values.shape}")
        return dict(zip(self.parameter_names, values))

    def equation(self, values: Sequence[float] | Mapping[str, float] | np.ndarray | None = None) -> System:
        """The full equation with numbers (nominal parameters by default)."""
        return bind(self.system, self._values(self.nominal if values is None else values))

    @cached_property
    def skeleton_terms(self) -> Terms:
        """Terms with every number and parameter replaced by a placeholder (input to corruption)."""
        return tuple(tuple((s, skeleton((t,))[0]) for s, t in comp) for comp in self.terms)

    def skeleton(self) -> System:
        return skeleton(self.system)

    def vector_field(self, u: np.ndarray, params: np.ndarray | None = None) -> np.ndarray:
        """du/dt for states u of shape (B, 3) (or (3,)) and parameters of shape (B, P) (or (P,))."""
        p = self.nominal_values if params is None else np.asarray(params, dtype=float)
        if p.shape[-1:] != (len(self.nominal),):
            raise ValueError(f"{self.name}: expected params with shape (..., {len(self.nominal)}), got {p.shape}")
        return self._field(u, {k: p[..., i] for i, k in enumerate(self.parameter_names)})

    def draw_parameters(self, n: int, rng: np.random.Generator, spread: float = PARAMETER_SPREAD) -> np.ndarray:
        """(n, P) parameters, each uniform within ``spread`` x |nominal| of nominal, 3 significant digits."""
        if not 0 <= spread < 1:
            raise ValueError(f"spread must be in [0, 1), got {spread}")
        c = self.nominal_values
        return round_significant(rng.uniform(c - spread * np.abs(c), c + spread * np.abs(c), size=(n, len(c))))


# ----------------------------------------------------------------------------- the twelve families

u0, u1, u2 = "u_0", "u_1", "u_2"


def _p(name: str, factor: float = 1.0) -> Node:
    return param(name, factor)


def _terms(*components: Sequence[tuple[int, Node]]) -> Terms:
    return tuple(tuple(c) for c in components)


_SOURCE = "form and nominal values as in the PROSE ODE generator (felix-lyx/prose)"

FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("thomas", "Thomas (cyclically symmetric)", {"b": 0.17}, _terms(
        [(1, Node("sin", (var(1),))), (1, product(_p("b", -1), u0))],
        [(1, Node("sin", (var(2),))), (1, product(_p("b", -1), u1))],
        [(1, Node("sin", (var(0),))), (1, product(_p("b", -1), u2))],
    ), f"Thomas (1999); {_SOURCE}"),
    Family("lorenz", "Lorenz", {"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}, _terms(
        [(1, product(_p("sigma"), u1)), (1, product(_p("sigma", -1), u0))],
        [(1, product(_p("rho"), u0)), (-1, product(u0, u2)), (-1, var(1))],
        [(1, product(u0, u1)), (1, product(_p("beta", -1), u2))],
    ), f"Lorenz (1963); {_SOURCE}"),
    # e = 0.25 is drawn but unused in the official generator; it is left out here
    Family("aizawa", "Aizawa", {"a": 0.95, "b": 0.7, "c": 0.6, "d": 3.5, "f": 0.1}, _terms(
        [(1, product(u0, u2)), (1, product(_p("b", -1), u0)), (1, product(_p("d", -1), u1))],
        [(1, product(_p("d"), u0)), (1, product(u1, u2)), (1, product(_p("b", -1), u1))],
        [(1, _p("c")), (1, product(_p("a"), u2)), (-1, Node("div", (product(u2, u2, u2), product(3.0)))),
         (-1, product(u0, u0)), (1, product(_p("f"), u0, u0, u0, u2))],
    ), f"Aizawa (1982); {_SOURCE}"),
    Family("chen_lee", "Chen-Lee", {"a": 5.0, "d": -0.38}, _terms(
        [(1, product(_p("a"), u0)), (-1, product(u1, u2))],
        [(1, product(-10.0, u1)), (1, product(u0, u2))],
        [(1, product(_p("d"), u2)), (1, Node("div", (product(u0, u1), product(3.0))))],
    ), f"Chen & Lee (2004); {_SOURCE}"),
    Family("dadras", "Dadras", {"a": 1.25, "b": 1.15, "c": 0.75, "d": 0.8, "e": 4.0}, _terms(
        [(1, product(0.5, u1)), (1, product(_p("a", -1), u0)), (1, product(_p("b"), u1, u2))],
        [(1, product(_p("c"), u1)), (1, product(-0.5, u0, u2)), (1, product(0.5, u2))],
        [(1, product(_p("d"), u0, u1)), (1, product(_p("e", -1), u2))],
    ), f"Dadras & Momeni (2009); {_SOURCE}"),
    Family("rossler", "Rössler", {"a": 0.1, "b": 0.1, "c": 14.0}, _terms(
        [(-1, var(1)), (-1, var(2))],
        [(1, var(0)), (1, product(_p("a"), u1))],
        [(1, _p("b")), (1, product(u0, u2)), (1, product(_p("c", -1), u2))],
    ), f"Rössler (1976); {_SOURCE}"),
    Family("halvorsen", "Halvorsen", {"a": -0.35}, _terms(
        [(1, product(_p("a"), u0)), (-1, var(1)), (-1, var(2)), (-1, product(0.25, u1, u1))],
        [(1, product(_p("a"), u1)), (-1, var(2)), (-1, var(0)), (-1, product(0.25, u2, u2))],
        [(1, product(_p("a"), u2)), (-1, var(0)), (-1, var(1)), (-1, product(0.25, u0, u0))],
    ), f"Halvorsen (Sprott 2010); {_SOURCE}"),
    # the generator draws alpha = -2 x U(0.98 +- 10%), i.e. nominal -1.96 +- 10%
    Family("rabinovich_fabrikant", "Rabinovich-Fabrikant", {"alpha": -1.96, "gamma": 0.1}, _terms(
        [(1, product(u1, u2)), (-1, var(1)), (1, product(u0, u0, u1)), (1, product(_p("gamma"), u0))],
        [(1, product(3.0, u0, u2)), (1, var(0)), (-1, product(u0, u0, u0)), (1, product(_p("gamma"), u1))],
        [(1, product(_p("alpha"), u2)), (1, product(-2.0, u0, u1, u2))],
    ), f"Rabinovich & Fabrikant (1979); {_SOURCE}"),
    Family("sprott_b", "Sprott B", {"a": 0.4, "b": 1.2, "c": 1.0}, _terms(
        [(1, product(_p("a"), u1, u2))],
        [(1, var(0)), (1, product(_p("b", -1), u1))],
        [(1, _p("c")), (-1, product(u0, u1))],
    ), f"Sprott (1994), case B; {_SOURCE}"),
    Family("sprott_linz_f", "Sprott-Linz F", {"a": 0.5}, _terms(
        [(1, var(1)), (1, var(2))],
        [(1, product(_p("a"), u1)), (-1, var(0))],
        [(1, product(u0, u0)), (-1, var(2))],
    ), f"Sprott & Linz, case F; {_SOURCE}"),
    Family("four_wing", "Four-wing", {"a": 0.2, "b": 0.01, "c": -0.4}, _terms(
        [(1, product(_p("a"), u0)), (1, product(u1, u2))],
        [(1, product(_p("b"), u0)), (1, product(_p("c"), u1)), (-1, product(u0, u2))],
        [(-1, var(2)), (-1, product(u0, u1))],
    ), f"four-wing attractor; {_SOURCE}"),
    # forced Duffing made autonomous: u_0 is time (du_0/dt = 1)
    Family("duffing", "Duffing (forced, autonomous form)",
           {"alpha": -1.0, "beta": -5.0, "gamma": 8.0, "delta": -0.02, "omega": 0.5}, _terms(
        [(1, product(1.0))],
        [(1, var(2))],
        [(1, product(_p("delta"), u2)), (1, product(_p("alpha"), u1)), (1, product(_p("beta"), u1, u1, u1)),
         (1, Node("mul", (_p("gamma"), Node("cos", (product(_p("omega"), u0),)))))],
    ), f"Duffing oscillator, forced; {_SOURCE}"),
]}


def get_family(name: str) -> Family:
    if name not in FAMILIES:
        raise ValueError(f"unknown family {name!r}; choose from {', '.join(FAMILIES)}")
    return FAMILIES[name]


# ----------------------------------------------------------------------------- trajectories


def integrate(family: Family, params: np.ndarray, u0: np.ndarray, times: np.ndarray | None = None,
              substeps: int = SUBSTEPS) -> np.ndarray:
    """Classical RK4 on a uniform output grid, all trajectories at once.

    params (B, P), u0 (B, 3) -> (B, T, 3). A trajectory that becomes non-finite or leaves
    |u| < 1e3 is NaN from then on (see ``is_valid``).
    """
    times = time_grid() if times is None else np.asarray(times, dtype=float)
    params, u = np.atleast_2d(np.asarray(params, dtype=float)), np.atleast_2d(np.asarray(u0, dtype=float)).copy()
    if u.shape[1:] != (family.dim,) or params.shape != (u.shape[0], len(family.nominal)):
        raise ValueError(f"{family.name}: expected u0 with shape (B, {family.dim}) and params with shape "
                         f"(B, {len(family.nominal)}), got {u.shape} and {params.shape}")
    steps = np.diff(times)
    if times.ndim != 1 or len(times) < 2 or not np.allclose(steps, steps[0]) or steps[0] <= 0:
        raise ValueError("times must be a uniform, increasing 1-D grid with at least two points")
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    h = steps[0] / substeps
    f = family.vector_field
    out = np.empty((u.shape[0], len(times), family.dim))
    out[:, 0] = u
    with np.errstate(all="ignore"):
        for n in range(1, len(times)):
            for _ in range(substeps):
                k1 = f(u, params)
                k2 = f(u + 0.5 * h * k1, params)
                k3 = f(u + 0.5 * h * k2, params)
                k4 = f(u + h * k3, params)
                u = u + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)
            bad = ~np.all(np.isfinite(u) & (np.abs(u) < BLOW_UP), axis=1)
            u[bad] = np.nan  # frozen: keeps overflow out of later steps
            out[:, n] = u
    return out


def is_valid(trajectories: np.ndarray) -> np.ndarray:
    """True for trajectories that stay finite and inside |u| < 1e3 (the paper's rejection rule)."""
    with np.errstate(invalid="ignore"):
        return np.all(np.isfinite(trajectories) & (np.abs(trajectories) < BLOW_UP), axis=(-2, -1))


def simulate(family: Family, params: np.ndarray, n_initial: int, rng: np.random.Generator,
             max_rounds: int = 10, times: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_initial`` trajectories per equation from initial states ~ U[-2, 2]^3.

    Rejected trajectories are redrawn with fresh initial states, up to ``max_rounds`` rounds (the
    paper draws up to 10x extra candidates). Returns ``(u, u0, ok)``: u (E, n_initial, T, 3), the
    initial states (E, n_initial, 3) and ok (E,), False for equations still missing a trajectory
    (their rows are NaN).
    """
    params = np.atleast_2d(np.asarray(params, dtype=float))
    if n_initial < 1:
        raise ValueError(f"n_initial must be >= 1, got {n_initial}")
    n_eq = params.shape[0]
    times = time_grid() if times is None else times
    u = np.full((n_eq, n_initial, len(times), family.dim), np.nan)
    u0 = np.full((n_eq, n_initial, family.dim), np.nan)
    todo = np.ones((n_eq, n_initial), dtype=bool)
    for _ in range(max_rounds):
        e, i = np.nonzero(todo)
        if len(e) == 0:
            break
        start = rng.uniform(IC_LOW, IC_HIGH, size=(len(e), family.dim))
        traj = integrate(family, params[e], start, times)
        good = is_valid(traj)
        u[e[good], i[good]], u0[e[good], i[good]] = traj[good], start[good]
        todo[e[good], i[good]] = False
    return u, u0, ~todo.any(axis=1)


def add_noise(u: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
    """Additive Gaussian noise scaled per trajectory: ||noise||_2 = level x ||u||_2 over all times and components.

    u has shape (..., T, d); the paper uses level 0.02 on inputs and targets alike.
    """
    if level < 0:
        raise ValueError(f"noise level must be >= 0, got {level}")
    u = np.asarray(u, dtype=float)
    if level == 0:
        return u.copy()
    z = rng.standard_normal(u.shape)
    norm_u = np.linalg.norm(u, axis=(-2, -1), keepdims=True)
    norm_z = np.linalg.norm(z, axis=(-2, -1), keepdims=True)
    return u + level * norm_u / np.maximum(norm_z, 1e-12) * z


def parameter_distance(family: Family, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square parameter difference in units of |nominal|; a (..., P), b (..., P)."""
    scale = np.abs(family.nominal_values)
    return np.sqrt(np.mean(((np.asarray(a) - np.asarray(b)) / scale) ** 2, axis=-1))


def nearest_distance(family: Family, test: np.ndarray, train: np.ndarray) -> np.ndarray:
    """For each test equation (N, P), the distance to its nearest training equation (M, P) of the family."""
    test, train = np.atleast_2d(test), np.atleast_2d(train)
    if train.shape[0] == 0:
        return np.full(test.shape[0], np.inf)
    return parameter_distance(family, test[:, None, :], train[None, :, :]).min(axis=1)

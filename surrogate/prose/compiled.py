"""Systems as bytecode for a compiled stack machine: RK4 of one small system at machine speed.

The numpy evaluator of ``surrogate.prose.symbols`` walks a tree in Python once per call, which is
cheap for a large batch and dominant for one trajectory: refining and forecasting one decoded
equation takes tens of thousands of sequential field evaluations on a few rows. Here the tree is
flattened once into postfix instructions (never Python source: no ``eval``/``exec``), and numba
compiles one interpreter for all of them, so the RK4 loop, the stack machine and the arithmetic run
without the interpreter in between. Division by zero and overflow give inf/nan as in numpy.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numba
import numpy as np

from surrogate.prose.odes import BLOW_UP
from surrogate.prose.symbols import BINARY, UNARY, InvalidExpression, System, postfix

# instruction set: (opcode, a, b)
_VAR, _CONST, _PARAM = 0, 1, 2  # push u[a]; push numbers[a]; push numbers[b] * params[a]
_UNARY = {"neg": 3, "inv": 4, "sin": 5, "cos": 6, "pow2": 7}
_BINARY = {"add": 8, "sub": 9, "mul": 10, "div": 11}
assert set(_UNARY) == set(UNARY) and set(_BINARY) == set(BINARY)  # the same operators as the numpy evaluator


class Bytecode(NamedTuple):
    code: np.ndarray  # (L, 3) int64 instructions, the components one after another
    numbers: np.ndarray  # (M,) float64 constants and parameter factors
    starts: np.ndarray  # (d + 1,) int64: component i is code[starts[i]:starts[i + 1]]
    stack_size: int


def bytecode(system: System, parameters: Sequence[str]) -> Bytecode:
    """The systems' postfix instructions (``symbols.postfix``) as arrays; a parameter named
    ``parameters[j]`` reads column j of ``params``."""
    column = {name: j for j, name in enumerate(parameters)}
    code: list[tuple[int, int, int]] = []
    numbers: list[float] = []
    starts, stack_size = [0], 1
    for tree in system:
        depth = 0
        for kind, arg in postfix(tree):
            if kind == "var":
                code.append((_VAR, arg, 0))
            elif kind == "const":
                code.append((_CONST, len(numbers), 0))
                numbers.append(arg)
            elif kind == "param":
                name, factor = arg
                if name not in column:
                    known = ", ".join(parameters) or "none"
                    raise InvalidExpression(f"parameter {name!r} has no column; known: {known}")
                code.append((_PARAM, column[name], len(numbers)))
                numbers.append(factor)
            elif arg in _UNARY:
                code.append((_UNARY[arg], 0, 0))
                continue
            else:
                code.append((_BINARY[arg], 0, 0))
                depth -= 1
                continue
            depth += 1
            stack_size = max(stack_size, depth)
        starts.append(len(code))
    return Bytecode(np.array(code, dtype=np.int64).reshape(-1, 3), np.array(numbers, dtype=float),
                    np.array(starts, dtype=np.int64), stack_size)


@numba.njit(cache=True, error_model="numpy")
def _field(code, numbers, starts, params, u, out, stack):
    """out[i] = component i of the field at state u with parameters params (one row)."""
    for comp in range(len(starts) - 1):
        top = 0
        for i in range(starts[comp], starts[comp + 1]):
            op = code[i, 0]
            if op == 0:
                stack[top] = u[code[i, 1]]
                top += 1
            elif op == 1:
                stack[top] = numbers[code[i, 1]]
                top += 1
            elif op == 2:
                stack[top] = numbers[code[i, 2]] * params[code[i, 1]]
                top += 1
            elif op == 3:
                stack[top - 1] = -stack[top - 1]
            elif op == 4:
                stack[top - 1] = 1.0 / stack[top - 1]
            elif op == 5:
                stack[top - 1] = np.sin(stack[top - 1])
            elif op == 6:
                stack[top - 1] = np.cos(stack[top - 1])
            elif op == 7:
                stack[top - 1] = stack[top - 1] * stack[top - 1]
            else:
                b = stack[top - 1]
                top -= 1
                a = stack[top - 1]
                if op == 8:
                    stack[top - 1] = a + b
                elif op == 9:
                    stack[top - 1] = a - b
                elif op == 10:
                    stack[top - 1] = a * b
                else:
                    stack[top - 1] = a / b
        out[comp] = stack[0]


@numba.njit(cache=True, error_model="numpy")
def _rk4(code, numbers, starts, stack_size, params, u0, substeps, steps, blow_up):
    """RK4 of every row over the output intervals: interval i in substeps[i] steps of length steps[i]."""
    n_out = len(steps) + 1
    rows, d = u0.shape
    out = np.empty((rows, n_out, d))
    stack = np.empty(stack_size)
    k1, k2, k3, k4, trial = np.empty(d), np.empty(d), np.empty(d), np.empty(d), np.empty(d)
    for r in range(rows):
        u = u0[r].copy()
        p = params[r]
        out[r, 0] = u
        alive = True
        for n in range(1, n_out):
            h = steps[n - 1]
            if alive:
                for _ in range(substeps[n - 1]):
                    _field(code, numbers, starts, p, u, k1, stack)
                    for j in range(d):
                        trial[j] = u[j] + 0.5 * h * k1[j]
                    _field(code, numbers, starts, p, trial, k2, stack)
                    for j in range(d):
                        trial[j] = u[j] + 0.5 * h * k2[j]
                    _field(code, numbers, starts, p, trial, k3, stack)
                    for j in range(d):
                        trial[j] = u[j] + h * k3[j]
                    _field(code, numbers, starts, p, trial, k4, stack)
                    for j in range(d):
                        u[j] = u[j] + (h / 6.0) * (k1[j] + 2 * k2[j] + 2 * k3[j] + k4[j])
                for j in range(d):
                    if not (np.isfinite(u[j]) and abs(u[j]) < blow_up):
                        alive = False
            if alive:
                out[r, n] = u
            else:
                out[r, n] = np.nan  # frozen: diverged rows stay NaN, as in the numpy integrator
    return out


class CompiledSystem:
    """A system compiled once; ``integrate`` runs RK4 for rows of (parameters, start state)."""

    def __init__(self, system: System, parameters: Sequence[str] = ()):
        self.dim = len(system)
        self.parameters = tuple(parameters)
        self.bytecode = bytecode(system, self.parameters)

    def integrate(self, params: np.ndarray, u0: np.ndarray, times: np.ndarray,
                  substeps: int | np.ndarray) -> np.ndarray:
        """params (R, K) in the order of ``parameters``, u0 (R, d), increasing times (T,) -> (R, T, d).

        Classical RK4 with ``substeps`` steps per output interval (one number, or one per interval for
        uneven times); a row that leaves |u| < 1e3 or becomes non-finite is NaN from then on (the same
        rule as the data generator). On an evenly spaced grid with one number of substeps every step has
        the length of the first interval's, as in the numpy integrator.
        """
        u0 = np.ascontiguousarray(u0, dtype=float)
        params = np.ascontiguousarray(np.broadcast_to(params, (len(u0), len(self.parameters))), dtype=float)
        if u0.ndim != 2 or u0.shape[1] != self.dim:
            raise ValueError(f"u0: expected shape (R, {self.dim}), got {u0.shape}")
        times = np.asarray(times, dtype=float)
        if times.ndim != 1 or len(times) < 1 or np.any(np.diff(times) <= 0):
            raise ValueError(f"times: expected a non-empty, strictly increasing 1-D grid, got {times!r}")
        intervals = np.diff(times)
        counts = np.ascontiguousarray(np.broadcast_to(np.asarray(substeps, dtype=np.int64), intervals.shape))
        if np.any(counts < 1):
            raise ValueError(f"substeps: expected integers >= 1, got {substeps!r}")
        even = len(intervals) > 0 and np.all(counts == counts[0]) and np.allclose(intervals, intervals[0], rtol=1e-9)
        steps = np.full(len(intervals), intervals[0] / counts[0]) if even else intervals / counts
        code, numbers, starts, stack_size = self.bytecode
        return _rk4(code, numbers, starts, stack_size, params, u0, counts, steps, BLOW_UP)

"""A trained Lorenz96 closure inside a plain numpy RK4 loop, written as a user of it would write it.

    python apps/lorenz96_numpy_rk4.py results/lorenz96_mno/latest --steps 400

Only `surrogate.load` and `closure(X)` come from the package; the integrator is ordinary numpy.
"""
from __future__ import annotations

import argparse

import numpy as np

import surrogate


def slow_tendency(X: np.ndarray, F: float) -> np.ndarray:
    """Known physics of the slow variables: X_{k-1}(X_{k+1} - X_{k-2}) - X_k + F."""
    return np.roll(X, 1, -1) * (np.roll(X, -1, -1) - np.roll(X, 2, -1)) - X + F


def integrate(closure, X0: np.ndarray, F: float, dt: float, steps: int) -> np.ndarray:
    """Classical RK4 on dX/dt = N(X) + closure(X); returns every state, (steps + 1, *X0.shape)."""
    f = lambda X: slow_tendency(X, F) + closure(X)  # noqa: E731
    out = [X0]
    X = X0
    for _ in range(steps):
        k1 = f(X)
        k2 = f(X + 0.5 * dt * k1)
        k3 = f(X + 0.5 * dt * k2)
        k4 = f(X + dt * k3)
        X = X + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        out.append(X)
    return np.stack(out)


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="results/lorenz96_mno/latest")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--members", type=int, default=4)
    args = parser.parse_args(argv)

    model = surrogate.load(args.run)
    K = model.metadata["K_trained"]
    X0 = np.random.default_rng(0).normal(5.0, 5.0, size=(args.members, K))
    traj = integrate(model.closure, X0, model.F, model.dt, args.steps)
    print(f"{args.members} members, K={K}, {args.steps} steps of dt={model.dt} with the {model.metadata['method']} "
          f"closure: final mean {traj[-1].mean():.3f}, std {traj[-1].std():.3f}, bounded: {np.isfinite(traj).all()}")
    return traj


if __name__ == "__main__":
    main()

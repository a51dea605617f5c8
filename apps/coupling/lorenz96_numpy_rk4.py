"""A trained Lorenz96 closure inside a plain numpy RK4 loop, written as a user of it would write it.

    python apps/coupling/lorenz96_numpy_rk4.py results/lorenz96_mno/latest --steps 400
    surrogate export lorenz96_mno --format numpy      # then, without torch:
    python apps/coupling/lorenz96_numpy_rk4.py results/lorenz96_mno/latest --exported

With a run folder the closure comes from `surrogate.load` (torch); with `--exported` it comes from
the run's numpy export (`exports/numpy/numpy_mno.py` and its weights), which needs numpy and scipy
only. The integrator is ordinary numpy either way.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np


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
    parser.add_argument("--exported", action="store_true", help="use the run's numpy export instead of torch")
    args = parser.parse_args(argv)

    closure, K, F, dt, name = exported_closure(Path(args.run)) if args.exported else packaged_closure(args.run)
    X0 = np.random.default_rng(0).normal(5.0, 5.0, size=(args.members, K))
    traj = integrate(closure, X0, F, dt, args.steps)
    print(f"{args.members} members, K={K}, {args.steps} steps of dt={dt} with the {name} closure: "
          f"final mean {traj[-1].mean():.3f}, std {traj[-1].std():.3f}, bounded: {np.isfinite(traj).all()}")
    return traj


def packaged_closure(run: str):
    import surrogate

    model = surrogate.load(run)
    return model.closure, model.metadata["K_trained"], model.F, model.dt, model.metadata["method"]


def exported_closure(run: Path):
    folder = run / "exports" / "numpy"
    if not (folder / "numpy_mno.py").exists():
        raise SystemExit(f"{folder}: no numpy export; run `surrogate export {run} --format numpy` first")
    spec = importlib.util.spec_from_file_location("numpy_mno", folder / "numpy_mno.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    check = json.loads((folder / "check.json").read_text())
    weights = next(f for f in check["files"] if f.endswith(".npz"))
    coarse = json.loads((run / "model" / weights.replace(".npz", ".json")).read_text())
    return module.NumpyMNO.load(folder / weights), check["K"], coarse["F"], coarse["dt"], Path(weights).stem


if __name__ == "__main__":
    main()

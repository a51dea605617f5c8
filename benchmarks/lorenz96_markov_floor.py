"""How far can a closure that sees only the current slow state go? In the paper case (K = J = 4) the slow
state is 4-dimensional, so with over a million (X, f) pairs a k-nearest-neighbour average estimates the
conditional mean E[f | X], the best any Markovian closure can do, and its error on new states is that
closure's floor (closure RMSE as `benchmarks/lorenz96.py` reports it: all sites, one coarse step).

    python benchmarks/lorenz96_markov_floor.py [--snippets 4000] [--steps 400]

Trajectories from the case's solver, initial states and warm-up (seed 1, not the benchmark's data);
80% of the snippets to fit the neighbours, every 20th step of the others to score them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from surrogate.core.case import load_case
from surrogate.lorenz96.data import closure_target, truth_model
from surrogate.lorenz96.physics import random_initial_state

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--snippets", type=int, default=4000)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--neighbours", type=int, nargs="*", default=[4, 16, 64])
    args = p.parse_args()
    case = load_case(ROOT / "cases" / "lorenz96_mno_paper.yaml")
    s = case.solver
    model = truth_model(case)
    X, Y = random_initial_state(s.K, s.J, args.snippets, np.random.default_rng(1))
    X, Y = model.spin_up(X, Y, s.dt, int(round(case.data.spinup_mtu / s.dt)))
    xs, us, _ = model.run(X, Y, s.dt, args.steps + 1, case.data.sample_every)
    x, f = closure_target(case, xs, us)  # the Euler residual (X_{t+1} - X_t)/dt - N(X_t) and its inputs
    fit = int(0.8 * args.snippets)
    tree = cKDTree(x[:fit].reshape(-1, s.K))
    f_fit = f[:fit].reshape(-1, s.K)
    x_new, f_new = x[fit:, ::20].reshape(-1, s.K), f[fit:, ::20].reshape(-1, s.K)
    print(f"{fit * x.shape[1]:,} pairs to fit, {len(x_new):,} to score; std of f {f.std():.3f}")
    for k in args.neighbours:
        _, i = tree.query(x_new, k=k)
        rmse = float(np.sqrt(((f_fit[i].mean(1) - f_new) ** 2).mean()))
        print(f"{k:3d} neighbours: closure RMSE {rmse:.4f}")


if __name__ == "__main__":
    main()

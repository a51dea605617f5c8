"""PINN benchmark: per PDE, PIG (our default and the paper's settings) against the deepxde PINN.

Each case runs in its own process (`surrogate run`, one torch thread) so its wall time and peak
memory are its own. Rows are merged into benchmarks/results/pinn.json, replacing earlier rows of
the same (case, method, metric).

    python benchmarks/pinn.py --pdes helmholtz burgers --seeds 100 200 300 --profile quick
    python benchmarks/pinn.py --pdes burgers --tune-baseline 30    # the deepxde grid, 30 CPU s each

Training seconds are CPU seconds of the training process (one thread), the clock both methods'
budgets use; wall time is longer when other jobs share the machine.
"""
from __future__ import annotations

import argparse
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "pinn.json"
PDES = ["helmholtz", "klein_gordon", "flow_mixing", "burgers", "allen_cahn"]
# the PIG paper's Table 1 mean (PIG) and the best published number known to us (reference sheet)
PUBLISHED = {
    "helmholtz": {"pig": 4.13e-5, "best": 1.37e-5, "best_by": "PIG + SIREN"},
    "klein_gordon": {"pig": 2.76e-3, "best": 3.68e-4, "best_by": "separable PIG"},
    "flow_mixing": {"pig": 4.51e-4, "best": 3.48e-4, "best_by": "PIG, dense covariance"},
    "burgers": {"pig": None, "best": 6.7e-4, "best_by": "Raissi et al. 2019 PINN"},
    "allen_cahn": {"pig": 1.04e-4, "best": 2.24e-5, "best_by": "PirateNet"},
}
METRICS = [("rel_l2", "1"), ("rel_l2_best_during_training", "1"), ("train_seconds", "s"), ("steps", "1"),
           ("parameters", "1")]


def run_case(case: Path, profile: str, seed: int, results: Path, overrides: list[str]) -> Path:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "surrogate", "--results", str(results), "run", str(case), f"seed={seed}", *overrides,
           "--profile", profile, "--fresh", "--quiet"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, cwd=ROOT)
    return (results / case.stem / "latest").resolve()


def collect(run: Path) -> tuple[dict, dict]:
    metrics = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    return metrics, meta


def summarise(case: str, pde: str, method: str, per_seed: list[dict], seeds: list[int], profile: str) -> list[dict]:
    rows = []
    for metric, unit in METRICS + [("peak_memory_mib", "MiB")]:
        vals = [r[metric] for r in per_seed if metric in r]
        if not vals:
            continue
        published = PUBLISHED[pde]["pig"] if (metric == "rel_l2" and method.startswith("pig")) else None
        rows.append({"case": case, "method": method, "metric": metric, "value": float(np.mean(vals)),
                     "std": float(np.std(vals)) if len(vals) > 1 else None, "unit": unit, "published": published,
                     "seeds": seeds, "per_seed": [float(v) for v in vals], "profile": profile})
    return rows


def merge(rows: list[dict], command: str, seeds: list[int]) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(Path(tempfile.gettempdir()) / "surrogate-pinn-benchmark.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = json.loads(OUT.read_text()) if OUT.exists() else {"rows": []}
        key = lambda r: (r["case"], r["method"], r["metric"])  # noqa: E731
        new_keys = {key(r) for r in rows}
        kept = [r for r in old["rows"] if key(r) not in new_keys]
        data = {"family": "pinn", "date": dt.date.today().isoformat(),
                "machine": "2 CPU cores shared with other work, no GPU; one torch thread per run",
                "command": "; ".join(dict.fromkeys([*old.get("command", "").split("; "), command]).keys()).strip("; "),
                "seeds": sorted(set(old.get("seeds", [])) | set(seeds)),
                "published_best": PUBLISHED, "rows": kept + rows}
        tmp = OUT.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, OUT)


def step_costs(pdes: list[str], repeats: int = 3) -> list[dict]:
    """Seconds per loss + gradient evaluation of each default case's PIG, with one engineering
    choice changed at a time: derivatives (closed form / autograd), precision, local evaluation."""
    import time

    import torch

    from surrogate.core.case import load_case
    from surrogate.pinn.pig import PIG
    from surrogate.pinn.training import PINNLoss, sample_points

    torch.set_num_threads(1)
    rows = []
    for pde in pdes:
        case = load_case(ROOT / "cases" / f"pig_{pde}.yaml")
        problem, s = case.problem(), case.surrogate
        variants = {"closed_form_float64": ("closed_form", "float64", s.local_cutoff),
                    "autograd_float64": ("autograd", "float64", s.local_cutoff),
                    "closed_form_float32": ("closed_form", "float32", s.local_cutoff),
                    "autograd_float32_dense": ("autograd", "float32", None),
                    "closed_form_float64_dense": ("closed_form", "float64", None),
                    "closed_form_float64_local6": ("closed_form", "float64", 6.0)}
        for label, (derivs, dtype, cutoff) in variants.items():
            model = PIG(problem.lower, problem.upper, s.n_gaussians, s.channels, s.hidden, s.sigma_init,
                        s.weight_std, s.input_range, [c in problem.periodic for c in problem.coords], s.covariance,
                        0, dtype, cutoff)
            pts = sample_points(problem, case.train, 0, getattr(torch, dtype))
            loss = PINNLoss(model, problem, case.train, derivs)
            loss.backward(pts)
            t0 = time.perf_counter()
            for _ in range(repeats):
                loss.backward(pts)
            sec = (time.perf_counter() - t0) / repeats
            rows.append({"case": f"pig_{pde}", "method": "pig", "metric": f"seconds_per_step_{label}", "value": sec,
                         "std": None, "unit": "s", "published": None, "seeds": [0],
                         "note": f"{case.train.n_collocation} points, {s.channels} x {s.n_gaussians} Gaussians"})
            print(f"{pde:14s} {label:28s} {sec:.3f} s per loss+gradient", flush=True)
    return rows


TUNING_WIDTHS = (20, 50, 100)
TUNING_LRS = (1e-3, 3e-3)


def tune_baseline(pdes: list[str], budget: float, depth: int = 3) -> list[dict]:
    """The deepxde PINN over TUNING_WIDTHS x TUNING_LRS (tanh, `depth` hidden layers, Adam then L-BFGS,
    the point counts of the default case's baseline), each with `budget` CPU seconds; final-iterate
    relative L2 on the case's full test grid. Selecting on the test error favours the baseline."""
    import torch

    from surrogate.core.case import load_case
    from surrogate.pinn.baselines import train_deepxde
    from surrogate.pinn.pdes import grid_points
    from surrogate.pinn.pipeline import test_points

    torch.set_num_threads(1)
    rows = []
    for pde in pdes:
        case = load_case(ROOT / "cases" / f"pig_{pde}.yaml")
        problem, base = case.problem(), case.evaluate.baselines[0]
        grid = problem.test_grid(test_points(case))
        pts = torch.as_tensor(grid_points(grid, problem.coords))
        ref = problem.reference(grid, quadrature_nodes=case.data.quadrature_nodes, modes=case.data.modes,
                                dt=case.data.dt).ravel()

        def error(net, pts=pts, ref=ref) -> float:
            with torch.no_grad():
                u = torch.cat([net(pts[i:i + 8192]).reshape(-1) for i in range(0, len(pts), 8192)]).numpy()
            return float(np.linalg.norm(u - ref) / np.linalg.norm(ref))
        for width in TUNING_WIDTHS:
            for lr in TUNING_LRS:
                spec = base.model_copy(update={"width": width, "depth": depth, "lr": lr, "time_limit": budget})
                net, curve = train_deepxde(problem, spec, case.seed, budget, error, log=lambda s: None,
                                           record_every=1000)
                err = error(net)
                label = f"pinn_{depth}x{width}_lr{lr:g}"
                rows.append({"case": f"pig_{pde}", "method": label, "metric": "rel_l2_tuning", "value": err,
                             "std": None, "unit": "1", "published": None, "seeds": [case.seed],
                             "note": f"tuning grid, {budget:g} CPU s, {curve['step'][-1]} steps, "
                                     f"{base.adam_steps} Adam steps then L-BFGS"})
                print(f"{pde:14s} {label:22s} rel. L2 {err:.3e}  ({curve['step'][-1]} steps)", flush=True)
    return rows


def markdown_table() -> str:
    """The README's results table, from benchmarks/results/pinn.json."""
    data = json.loads(OUT.read_text())
    cell = {(r["case"], r["method"], r["metric"]): r for r in data["rows"]}
    fmt = lambda r: "-" if r is None else (f"{r['value']:.2e}" + (f" ± {r['std']:.1e}" if r.get("std") else ""))  # noqa: E731
    sec = lambda r: "-" if r is None else f"{r['value']:.0f}"  # noqa: E731
    lines = ["| PDE | PIG default | s | PIG paper settings | s | deepxde PINN | s | PINN / PIG | published PIG "
             "| best known |", "|---|---|---|---|---|---|---|---|---|---|"]
    for pde in PDES:
        case = f"pig_{pde}"

        def get(method: str, metric: str, case: str = case):
            return cell.get((case, method, metric))
        if not any(get(m, "rel_l2") for m in ("pig", "pig_paper", "pinn")):
            continue
        pig, pinn = get("pig", "rel_l2"), get("pinn", "rel_l2")
        ratio = f"{pinn['value'] / pig['value']:.3g}" if pig and pinn else "-"
        pub = PUBLISHED[pde]
        lines.append(f"| {pde} | {fmt(pig)} | {sec(get('pig', 'train_seconds'))} | {fmt(get('pig_paper', 'rel_l2'))} | "
                     f"{sec(get('pig_paper', 'train_seconds'))} | {fmt(pinn)} | {sec(get('pinn', 'train_seconds'))} | "
                     f"{ratio} | {pub['pig'] or '-'} | {pub['best']} ({pub['best_by']}) |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pdes", nargs="+", default=PDES, choices=PDES)
    ap.add_argument("--variants", nargs="+", default=["default", "paper"], choices=["default", "paper"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[100, 200, 300])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--results", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--no-baseline", action="store_true", help="skip the deepxde PINN of the default case")
    ap.add_argument("--step-costs", action="store_true", help="only time one loss+gradient per variant")
    ap.add_argument("--table", action="store_true", help="print the README table from the results file")
    ap.add_argument("--tune-baseline", type=float, metavar="SECONDS",
                    help="only run the deepxde tuning grid, SECONDS of CPU time per configuration")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown_table())
        return 0
    command = "python " + " ".join(["benchmarks/pinn.py", *(argv if argv is not None else sys.argv[1:])])
    results = Path(args.results)
    if args.step_costs:
        merge(step_costs(args.pdes), command, [0])
        return 0
    if args.tune_baseline:
        merge(tune_baseline(args.pdes, args.tune_baseline), command, [100])
        return 0
    for pde in args.pdes:
        for variant in args.variants:
            case = ROOT / "cases" / (f"pig_{pde}.yaml" if variant == "default" else f"pig_{pde}_paper.yaml")
            overrides = ["evaluate.baselines=[]"] if args.no_baseline else []
            per_method: dict[str, list[dict]] = {}
            for seed in args.seeds:
                run = run_case(case, args.profile, seed, results, overrides)
                metrics, meta = collect(run)
                for m in metrics["methods"]:
                    vals = {r["metric"]: r["value"] for r in metrics["rows"] if r["method"] == m}
                    vals["peak_memory_mib"] = meta.get("peak_rss_mib")
                    label = "pig" if m == "pig" and variant == "default" else ("pig_paper" if m == "pig" else m)
                    per_method.setdefault(label, []).append(vals)
            rows = []
            for method, per_seed in per_method.items():
                rows += summarise(case.stem.removesuffix("_paper"), pde, method, per_seed, args.seeds, args.profile)
            merge(rows, command, args.seeds)
            for r in rows:
                if r["metric"] in ("rel_l2", "train_seconds", "peak_memory_mib"):
                    std = f" +- {r['std']:.2g}" if r["std"] is not None else ""
                    print(f"{r['case']:18s} {r['method']:10s} {r['metric']:16s} {r['value']:.3e}{std}"
                          f"  published {r['published']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

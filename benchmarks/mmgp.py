"""MMGP faithful vs improved vs GNN vs oracle GP on one split; prints the table and writes
benchmarks/results/<case>.json.

    python benchmarks/mmgp.py                       # the case's defaults (500 train / 200 test)
    python benchmarks/mmgp.py --n-train 250 --n-test 100 --max-iter 300
    python benchmarks/mmgp.py --case mmgp_hole      # shapes with a hole (rbf morphing)
    python benchmarks/mmgp.py --curve-only ...      # only the learning curve, on the cached data of the
                                                    # same settings; replaces the curve rows of the JSON
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

import torch

from surrogate.core.case import load_case
from surrogate.core.report import metrics_table
from surrogate.core.runner import run_case
from surrogate.core.store import RunFolder, write_json

ROOT = Path(__file__).resolve().parents[1]


def learning_curve(data: Path, settings: dict, sizes: list[int], repeats: int, n_test: int, seed: int) -> list[dict]:
    """Improved MMGP trained on random subsets of the training split; mean and std over repeats of the
    mean RRMSE (fields and scalars) on the first `n_test` test shapes."""
    import warnings

    import numpy as np

    from surrogate.core import metrics as M
    from surrogate.core.report import metric_row
    from surrogate.mmgp import data as D
    from surrogate.mmgp.data import FIELDS
    from surrogate.mmgp.fem import SCALAR_OUTPUTS
    from surrogate.mmgp.model import MMGP

    train, test = D.read_split(data, "train"), D.read_split(data, "test", n_test)
    rows = []
    for n in sizes:
        if n > len(train):
            continue
        scores = []
        for r in range(repeats):
            rng = np.random.default_rng([seed, n, r])
            subset = [train[i] for i in sorted(rng.choice(len(train), n, replace=False))]
            model = MMGP(**settings).fit(subset, seed + r)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                preds = [model.predict_arrays(s.nodes, s.triangles, s.inputs) for s in test]
            errs = [M.rrmse_field([s.fields[f] for s in test], [p["fields"][f][0] for p in preds]) for f in FIELDS]
            errs += [M.rrmse_scalar([s.outputs[j] for s in test], [p["scalars"][k][0] for p in preds])
                     for j, k in enumerate(SCALAR_OUTPUTS)]
            scores.append(float(np.mean(errs)))
        rows.append(metric_row("mmgp_improved", f"learning_curve_rrmse_mean_n{n}", float(np.mean(scores)),
                               std=float(np.std(scores)), repeats=repeats, n_train=n, n_test=len(test)))
        print(f"learning curve: n={n}: {np.mean(scores):.4g} +- {np.std(scores):.2g} ({repeats} repeats)", flush=True)
    return rows


def _without_notes(argv: list[str]) -> list[str]:
    """The command line that reproduces the numbers: remarks left out."""
    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--note":
            skip = True
        elif not a.startswith("--note="):
            kept.append(a)
    return kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", default="mmgp", choices=["mmgp", "mmgp_hole"])
    p.add_argument("--results", default=str(ROOT / "results"))
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-test", type=int, default=None)
    p.add_argument("--max-iter", type=int, default=None, help="L-BFGS-B iteration cap for every GP")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--run", default=None, help="score a finished run of the same settings instead of running again")
    p.add_argument("--curve-sizes", type=int, nargs="*", default=[16, 32, 64, 125, 250, 500])
    p.add_argument("--curve-repeats", type=int, default=5)
    p.add_argument("--curve-test", type=int, default=200, help="test shapes scored in the learning curve")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="further case overrides, e.g. workers=1 to solve missing samples on one process")
    p.add_argument("--note", action="append", default=[], help="a remark on this run kept in the JSON (repeatable)")
    p.add_argument("--curve-only", action="store_true", help="only the learning curve, on the cached solver data")
    args = p.parse_args(argv)
    if args.max_iter and args.case != "mmgp":
        p.error("--max-iter rewrites the baselines of cases/mmgp.yaml; for other cases use --set")
    torch.set_num_threads(1)
    overrides = [f"seed={args.seed}"]
    if args.n_train:
        overrides.append(f"data.n_train={args.n_train}")
    if args.n_test:
        overrides.append(f"data.n_test={args.n_test}")
    if args.max_iter:
        m = args.max_iter
        overrides += [f"surrogate.max_iter={m}",
                      f"evaluate.baselines=[{{kind: mmgp, name: mmgp_faithful, uncertainty: monte_carlo_as_published, "
                      f"max_iter: {m}}}, {{kind: mmgp, name: mmgp_faithful_closed_form, max_iter: {m}}}, "
                      f"{{kind: oracle_gp, max_iter: {m}}}, gnn]"]
    case = load_case(ROOT / "cases" / f"{args.case}.yaml", None, overrides + args.set)
    out_file = ROOT / "benchmarks" / "results" / f"{args.case}.json"
    if args.curve_only:
        return curve_only(case, args, out_file, argv)
    if args.run:
        run = RunFolder(Path(args.run))
        if run.meta().get("case_digest") != case.digest():
            raise SystemExit(f"{args.run} was run with other settings than these arguments")
    else:
        run = run_case(case, args.results, quiet=True)
    metrics = run.metrics()
    meta = run.meta()
    print(metrics_table(metrics, metrics["table_metrics"]))
    print()
    print(metrics_table({"rows": [r for r in metrics["rows"] if r["metric"] not in metrics["table_metrics"]]}))
    from surrogate.mmgp.pipeline import mmgp_settings

    settings = {**mmgp_settings(case.surrogate), "max_iter": case.surrogate.max_iter}
    curve = learning_curve(run.path / "data", settings, args.curve_sizes, args.curve_repeats, args.curve_test,
                           args.seed) if args.curve_repeats > 0 else []
    rows = [{"case": args.case, "std": None, "published": None, **r} for r in metrics["rows"] + curve]
    out = {"family": "mmgp", "date": dt.date.today().isoformat(), "machine": "2 CPU cores (shared), no GPU",
           "command": "python benchmarks/mmgp.py " + " ".join(_without_notes(sys.argv[1:] if argv is None else argv)),
           "seeds": [args.seed], "n_train": case.data.n_train, "n_test": case.data.n_test,
           "run_wall_seconds": meta.get("wall_seconds"), "peak_rss_mib": meta.get("peak_rss_mib"),
           "rows": rows, **({"notes": args.note} if args.note else {})}
    write_json(out_file, out)
    print(json.dumps({k: out[k] for k in ("n_train", "n_test", "run_wall_seconds", "peak_rss_mib")}))
    return 0


def curve_only(case, args, out_file: Path, argv: list[str] | None) -> int:
    """The learning curve on the cached solver data of these settings; the curve rows of `out_file` are
    replaced and the command that made them is kept beside the one that made the rest."""
    from surrogate.core.case import stable_hash
    from surrogate.mmgp.pipeline import MMGPPipeline, mmgp_settings

    data = Path(args.results) / ".cache" / "mmgp" / stable_hash(MMGPPipeline.data_config(case))
    if not (data / ".complete").exists():
        raise SystemExit(f"no finished solver data for these settings in {data}: run the benchmark without "
                         "--curve-only first")
    settings = {**mmgp_settings(case.surrogate), "max_iter": case.surrogate.max_iter}
    curve = learning_curve(data, settings, args.curve_sizes, args.curve_repeats, args.curve_test, args.seed)
    out = json.loads(out_file.read_text())
    out["rows"] = [r for r in out["rows"] if not r["metric"].startswith("learning_curve_")]
    out["rows"] += [{"case": args.case, "std": None, "published": None, **r} for r in curve]
    out["curve_command"] = "python benchmarks/mmgp.py " + " ".join(
        _without_notes(sys.argv[1:] if argv is None else argv))
    out["curve_date"] = dt.date.today().isoformat()
    write_json(out_file, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

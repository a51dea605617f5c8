"""Lorenz96 benchmark: both case files with every baseline, on the same data, in one process.

    python benchmarks/lorenz96.py [--results results] [--only lorenz96_mno]

Writes benchmarks/results/lorenz96.json (the format of DESIGN.md) and prints the tables. The
standard case runs its `full` profile; the paper case its default, which is the paper's data size.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path

import surrogate
from surrogate.core.case import load_case
from surrogate.core.report import metrics_list, metrics_table
from surrogate.core.runner import peak_memory_mib
from surrogate.core.store import list_runs, write_json

ROOT = Path(__file__).resolve().parents[1]
RUNS = {"lorenz96_mno_paper": None, "lorenz96_mno": "full"}


def finished_run(case: str, profile: str | None, results: str) -> Path | None:
    """The newest finished run of exactly this resolved case, if there is one."""
    digest = load_case(ROOT / "cases" / f"{case}.yaml", profile).digest()
    for run in list_runs(results):
        meta = run.meta()
        if run.path.parent.name == case and meta.get("case_digest") == digest and meta.get("status") == "finished":
            return run.path
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(ROOT / "results"))
    parser.add_argument("--only", choices=list(RUNS), action="append")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lorenz96.json"))
    parser.add_argument("--reuse", action="store_true",
                        help="take a finished run of exactly the same resolved case instead of running it again")
    args = parser.parse_args()

    rows, runs = [], {}
    for case, profile in RUNS.items():
        if args.only and case not in args.only:
            continue
        run = finished_run(case, profile, args.results) if args.reuse else None
        if run is None:
            run = surrogate.run(ROOT / "cases" / f"{case}.yaml", profile=profile, results=args.results)
        metrics = json.loads((run / "metrics.json").read_text())
        meta = json.loads((run / "meta.json").read_text())
        runs[case] = {"run": str(run.relative_to(ROOT)) if run.is_relative_to(ROOT) else str(run),
                      "profile": profile or "default", "wall_seconds": meta.get("wall_seconds"),
                      "peak_rss_mib": meta.get("peak_rss_mib"), "started": meta.get("started")}
        for r in metrics["rows"]:
            rows.append({"case": case, **r, "published": None})
        print(f"\n== {case} ({profile or 'default'}) ==")
        print(metrics_table(metrics, metrics.get("table_metrics")))
        rest = [r for r in metrics["rows"] if r["metric"] not in metrics.get("table_metrics", [])]
        print(metrics_list(rest))

    result = {
        "family": "lorenz96", "date": dt.date.today().isoformat(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores, no GPU",
        "command": "python benchmarks/lorenz96.py", "seeds": [0], "runs": runs,
        "peak_rss_mib": max([peak_memory_mib(), *(r["peak_rss_mib"] or 0 for r in runs.values())]),
        "note": "The MNO paper gives no Lorenz96 numbers in a table (Figs. 4-5 only), so `published` is null.",
        "rows": rows,
    }
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() and args.only else None
    if previous:  # a partial rerun keeps the other case's rows
        keep = [r for r in previous["rows"] if r["case"] not in runs]
        result["rows"] = keep + rows
        result["runs"] = {**{k: v for k, v in previous.get("runs", {}).items() if k not in runs}, **runs}
    peaks = [r.get("peak_rss_mib") or 0 for r in result["runs"].values()]
    result["peak_rss_mib"] = max([result["peak_rss_mib"], *peaks])
    write_json(args.out, result)
    print(f"\nwrote {args.out}; peak memory {result['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()

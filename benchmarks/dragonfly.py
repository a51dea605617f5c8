"""Dragonfly benchmark: SMART-style surrogate vs baselines, hybrid speedup/error, interference, simulator cost.

    OMP_NUM_THREADS=1 python benchmarks/dragonfly.py [--results DIR] [--reuse] [--parts case,hybrid,interference,sim]

Parts, each in its own subprocess so that its peak memory is its own:
- case: `cases/dragonfly_smart.yaml` (default profile) through `surrogate.run`: held-out MAPE, 80/95%
  interval coverage and forecast latency of every method, the jitter error floor, the hybrid curve.
- hybrid: the hybrid scenario again on df342 and df1056 with the case run's surrogate (trained on df72 and
  df342; width thresholds 0.1, 0.15, 0.2).
- interference: per workload, the target's mean iteration runtime with two co-runners (fft + nekbone)
  divided by its runtime alone, random vs contiguous placement (all jobs the same policy), PAR, df342.
- sim: packet-model throughput (simulated µs per wall second) on uniform random traffic and on an
  interference scenario at 72, 342 and 1,056 nodes, and the peak memory of the 1,056-node simulation.

Writes benchmarks/results/dragonfly.json (DESIGN.md format) and prints the tables.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from dragonfly_sim import offered_traffic  # uniform random traffic, as in the simulator benchmark

ROOT = Path(__file__).resolve().parents[1]
CASE = "dragonfly_smart"
GIB = 2**30 / 1e9
INTERFERENCE_APPS = ("milc", "nekbone", "cosmoflow", "fft", "io")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------------------- parts
def part_case(results: str, reuse: bool) -> dict:
    import surrogate
    from surrogate.core.case import load_case
    from surrogate.core.store import list_runs

    run = None
    if reuse:
        digest = load_case(ROOT / "cases" / f"{CASE}.yaml").digest()
        run = next((r.path for r in list_runs(results) if r.path.parent.name == CASE
                    and r.meta().get("case_digest") == digest and r.meta().get("status") == "finished"), None)
    if run is None:
        run = surrogate.run(ROOT / "cases" / f"{CASE}.yaml", results=results)
    metrics = json.loads((run / "metrics.json").read_text())
    meta = json.loads((run / "meta.json").read_text())
    from surrogate.core.case import stable_hash
    from surrogate.dragonfly.pipeline import DragonflyPipeline

    key = stable_hash(DragonflyPipeline.data_config(load_case(ROOT / "cases" / f"{CASE}.yaml")))
    done = Path(results) / ".cache" / "dragonfly" / key / ".complete"     # this case's data, when generated
    return {"run": str(run), "wall_seconds": meta.get("wall_seconds"), "peak_rss_mib": meta.get("peak_rss_mib"),
            "data_seconds": float(done.read_text().split()[0]) if done.exists() else None, "rows": metrics["rows"]}


def part_hybrid(results: str, preset: str, thresholds: list[float]) -> dict:
    """The case's hybrid scenario on a larger preset, with the surrogate of the newest finished case run."""
    import surrogate
    from surrogate.core.case import load_case
    from surrogate.dragonfly.hybrid import hybrid_scenario, run_hybrid

    case = load_case(ROOT / "cases" / f"{CASE}.yaml", None, [f"evaluate.hybrid.preset={preset}"])
    hy, sim = case.evaluate.hybrid, case.simulator
    run = Path(results) / CASE / "latest"
    model = surrogate.load(run)
    sc = hybrid_scenario(hy, sim)
    kw = {"window_us": sim.window_us, "dt_ns": sim.dt_ns, "steps": case.data.steps}
    ref = run_hybrid(sc, None, **kw)
    rows = [{"method": "packet_level", "metric": "hybrid_wall_s", "value": ref["wall_s"], "unit": "s",
             "preset": preset}]
    print(f"hybrid {preset}: all-packet {ref['wall_s']:.1f} s", flush=True)
    state = {k: v.clone() for k, v in model.net.state_dict().items()}
    for w in thresholds:
        model.net.load_state_dict(state)
        out = run_hybrid(sc, model, width_threshold=w, drift_threshold=hy.drift_threshold, warmup=hy.warmup,
                         recheck=hy.recheck, max_surrogate=hy.max_surrogate, tune_steps=hy.tune_steps,
                         settle=hy.settle, **kw)
        err = 100 * abs(out["target_runtime_us"] / ref["target_runtime_us"] - 1)
        tag = f"w{w:g}"
        rows += [{"method": "hybrid", "metric": f"speedup_{tag}", "value": ref["wall_s"] / out["wall_s"], "unit": "1"},
                 {"method": "hybrid", "metric": f"surrogate_fraction_{tag}", "value": out["surrogate_fraction"],
                  "unit": "1"},
                 {"method": "hybrid", "metric": f"runtime_error_{tag}", "value": err, "unit": "%"},
                 {"method": "hybrid", "metric": f"wall_s_{tag}", "value": out["wall_s"], "unit": "s"}]
        for r in rows[-4:]:
            r["preset"] = preset
        print(f"hybrid {preset} width<{w:g}: speedup {ref['wall_s'] / out['wall_s']:.2f}x, surrogate "
              f"{100 * out['surrogate_fraction']:.0f}%, runtime error {err:.2f}%", flush=True)
    return {"rows": rows, "run": str(run.resolve()), "peak_rss_mib": peak_rss_mib()}


def part_interference(preset: str = "df342", iterations: int = 12) -> dict:
    from surrogate.dragonfly.scenarios import Scenario, simulate

    rows = []
    for app in INTERFERENCE_APPS:
        for place in ("random", "contiguous"):
            sc = Scenario(preset=preset, target=app, target_placement=place, corunners=("fft", "nekbone"),
                          corunner_placements=(place, place), corunner_starts_us=(0.0, 0.0),
                          corunner_iterations=(4 * iterations, 4 * iterations), iterations=iterations,
                          placement_seed=11, jitter_seed=12, jitter=0.0)
            alone = simulate(sc, alone=True)["iteration_runtime"].values[0, 1:iterations]
            mixed = simulate(sc)["iteration_runtime"].values[0, 1:iterations]   # iteration 0 includes the start
            slow = float(np.mean(mixed) / np.mean(alone) - 1)
            rows.append({"method": "packet_par", "metric": f"slowdown_{app}_{place}", "value": 100 * slow, "unit": "%",
                         "alone_us": float(np.mean(alone)), "mixed_us": float(np.mean(mixed)), "preset": preset})
            print(f"interference {app:9} {place:10}: alone {np.mean(alone):8.1f} us, with co-runners "
                  f"{np.mean(mixed):8.1f} us, slowdown {100 * slow:+.1f}%", flush=True)
    return {"rows": rows, "peak_rss_mib": peak_rss_mib()}


def part_sim(preset: str) -> dict:
    from surrogate.dragonfly import Dragonfly, PacketNetwork
    from surrogate.dragonfly.scenarios import Scenario, simulate

    topo = Dragonfly.preset(preset)
    rows = []
    bound = 4.7 * (topo.n_nodes - 1) / (topo.a * topo.p) ** 2      # minimal routing, global links, GiB/s per node
    for routing in ("minimal", "par"):
        for load in (0.5, 0.9):
            net = PacketNetwork(topo, routing=routing, window_ns=10_000.0)
            warm, sim = 10.0, 20.0
            offered_traffic(net, topo, load * bound, (warm + sim) * 1e3, np.random.default_rng(0))
            net.run_until(warm * 1e3)
            t0 = time.perf_counter()
            net.run_until((warm + sim) * 1e3)
            wall = time.perf_counter() - t0
            rows.append({"method": f"packet_{routing}", "metric": f"sim_us_per_wall_s_uniform{load:g}",
                         "value": sim / wall, "unit": "us/s", "preset": preset})
    sc = Scenario(preset=preset, target="milc", target_placement="random", corunners=("nekbone", "cosmoflow"),
                  corunner_placements=("random", "random"), corunner_starts_us=(0.0, 0.0),
                  corunner_iterations=(10, 10), iterations=10, placement_seed=5, jitter_seed=6)
    t0 = time.perf_counter()
    ds = simulate(sc)
    wall = time.perf_counter() - t0
    sim_us = float(np.nanmax(ds["iteration_end"].values))
    rows.append({"method": "packet_par", "metric": "sim_us_per_wall_s_workload", "value": sim_us / wall, "unit": "us/s",
                 "preset": preset, "wall_s": wall, "sim_us": sim_us})
    rows.append({"method": "packet_par", "metric": "peak_rss_gib", "value": peak_rss_mib() / 1024, "unit": "GiB",
                 "preset": preset})
    for r in rows:
        print(f"sim {preset:7} {r['method']:14} {r['metric']:32} {r['value']:10.2f} {r['unit']}", flush=True)
    return {"rows": rows, "peak_rss_mib": peak_rss_mib()}


# -------------------------------------------------------------------------------------------- main
def run_part(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, "--part", *args], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")})
    sys.stdout.write(out.stdout[: out.stdout.rfind("@@RESULT@@")] if "@@RESULT@@" in out.stdout else out.stdout)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"part {args} failed")
    return json.loads(out.stdout.split("@@RESULT@@", 1)[1])


def table(rows: list[dict], metrics: list[str]) -> str:
    methods = list(dict.fromkeys(r["method"] for r in rows if r["metric"] in metrics))
    cell = {(r["method"], r["metric"]): r["value"] for r in rows}
    w = max(len(m) for m in methods) + 1
    head = f"{'method':{w}}" + "".join(f"{m[:18]:>20}" for m in metrics)
    lines = [head, "-" * len(head)]
    for m in methods:
        lines.append(f"{m:{w}}" + "".join(f"{cell[(m, k)]:20.4g}" if (m, k) in cell else f"{'-':>20}" for k in metrics))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(ROOT / "results"))
    ap.add_argument("--reuse", action="store_true", help="take a finished run of the same resolved case")
    ap.add_argument("--parts", default="case,hybrid,interference,sim")
    ap.add_argument("--part", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "dragonfly.json"))
    args = ap.parse_args()
    if args.part:
        name, *rest = args.part
        res = {"case": lambda: part_case(args.results, args.reuse), "interference": part_interference,
               "hybrid": lambda: part_hybrid(args.results, rest[0], [0.1, 0.15, 0.2]),
               "sim": lambda: part_sim(rest[0])}[name]()
        print("@@RESULT@@" + json.dumps(res, default=float))
        return

    from surrogate.core.store import write_json

    t_start = time.perf_counter()
    parts = args.parts.split(",")
    rows, runs = [], {}
    if "case" in parts:
        res = run_part(["case", "--results", args.results] + (["--reuse"] if args.reuse else []))
        runs["case"] = {k: v for k, v in res.items() if k != "rows"}
        rows += [{"case": CASE, **r, "published": None} for r in res["rows"]]
        crow = res["rows"]
        print("\n== forecasts on held-out scenarios (MAPE %, coverage, latency ms) ==")
        print(table(crow, ["mape_heldout", "mape_test_seeds", "mape_test_unseen", "mape_test_transfer",
                           "coverage80_heldout", "coverage95_heldout", "latency_ms", "latency_ms_df1056"]))
        print("\n== hybrid ==")
        for r in crow:
            if r["method"] in ("hybrid", "packet_level") or r["metric"] == "mape_reduction_vs_best_baseline":
                print(f"  {r['method']:14} {r['metric']:34} {r['value']:.4g} {r.get('unit', '')}")
    if "hybrid" in parts:
        for preset in ("df342", "df1056"):
            res = run_part(["hybrid", preset, "--results", args.results])
            runs[f"hybrid_{preset}"] = {k: v for k, v in res.items() if k != "rows"}
            rows += [{"case": f"hybrid_{preset}", **r, "published": None} for r in res["rows"]]
    if "interference" in parts:
        res = run_part(["interference"])
        runs["interference"] = {"peak_rss_mib": res["peak_rss_mib"]}
        rows += [{"case": "interference", **r, "published": None} for r in res["rows"]]
    if "sim" in parts:
        for preset in ("df72", "df342", "df1056"):
            res = run_part(["sim", preset])
            runs[f"sim_{preset}"] = {"peak_rss_mib": res["peak_rss_mib"]}
            rows += [{"case": "simulator", **r, "published": None} for r in res["rows"]]
    published = {("interference", "slowdown_milc_random"): 12.0, ("interference", "slowdown_milc_contiguous"): 0.0,
                 ("interference", "slowdown_nekbone_random"): 60.0,
                 ("interference", "slowdown_cosmoflow_random"): 66.0,
                 ("interference", "slowdown_cosmoflow_contiguous"): 0.0}
    for r in rows:
        r["published"] = published.get((r["case"], r["metric"]))
    result = {"family": "dragonfly", "date": dt.date.today().isoformat(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), no GPU",
              "command": "OMP_NUM_THREADS=1 python benchmarks/dragonfly.py " + " ".join(sys.argv[1:]),
              "seeds": [0], "runs": runs, "wall_seconds": round(time.perf_counter() - t_start, 1),
              "note": ("published: CODES/MFNetSim 1,056-node communication-time slowdowns (reference sheet 1.3), "
                       "not like-for-like with our 342-node skeletons; SMART publishes no table we could use."),
              "rows": rows}
    if Path(args.out).exists() and set(parts) != {"case", "hybrid", "interference", "sim"}:
        prev = json.loads(Path(args.out).read_text())
        done = {"case": CASE, "hybrid": "hybrid_df342", "interference": "interference", "sim": "simulator"}
        drop = {done[p] for p in parts} | ({"hybrid_df1056"} if "hybrid" in parts else set())
        keep = [r for r in prev["rows"] if r["case"] not in drop]
        result["rows"] = keep + rows
        result["runs"] = {**prev.get("runs", {}), **runs}
    write_json(args.out, result)
    print(f"\nwrote {args.out} ({result['wall_seconds']} s)")


if __name__ == "__main__":
    main()

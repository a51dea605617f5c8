"""Beyond one process: solver data on local processes vs a Dask LocalCluster, and training under
torchrun (1 vs 2 gloo processes). Prints the table and writes benchmarks/results/scaling.json.

    python benchmarks/scaling.py                    # smoke and default datasets, DDP on the default profile
    python benchmarks/scaling.py --quick            # smoke datasets only
    python benchmarks/scaling.py --data-only        # only the executor comparison, smoke and default
    python benchmarks/scaling.py --training-loops   # only the PROSE / SMART / MMGP GNN throughput under torchrun

Every measurement starts from an empty cache, so the solver really runs; both executors get
`workers` = 2 on this 2-core machine. The MMGP default dataset (704 nonlinear FEM solves, about
20 min per executor here) is replaced by its first 40 training samples and 1 test sample, said so in the rows.

The training loops of PROSE, the SMART surrogate and the MMGP GNN baseline are timed on their smoke
data (more scenarios for SMART) with the models of their default profiles (`TRAINING_LOOPS`):
samples per second per process over the training loop alone (rank 0's clock), with 1 and with 2
gloo processes on the same global batch.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from surrogate.core import registry  # noqa: E402
from surrogate.core.case import load_case, read_yaml  # noqa: E402
from surrogate.core.report import metric_row, metrics_table  # noqa: E402
from surrogate.core.store import RunFolder, read_json, write_json  # noqa: E402

DATASETS = [  # (case file, profile, extra overrides, label)
    ("lorenz96_mno.yaml", "smoke", [], "lorenz96 smoke"),
    ("pig_allen_cahn.yaml", "smoke", [], "pinn allen_cahn smoke"),
    ("mmgp.yaml", "smoke", [], "mmgp smoke"),
    ("lorenz96_mno.yaml", None, [], "lorenz96 default"),
    ("pig_allen_cahn.yaml", None, [], "pinn allen_cahn default"),
    ("mmgp.yaml", None, ["data.n_train=40", "data.n_test=1", "data.n_ood=0"], "mmgp 40 samples"),
]


def data_seconds(case_file: str, profile: str | None, overrides: list[str], executor: list[str]) -> float:
    case = load_case(ROOT / "cases" / case_file, profile, [*overrides, "workers=2", *executor])
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        pipeline = registry.pipeline_class(case.pipeline)(case, RunFolder(out), log=lambda m: None)
        t0 = time.perf_counter()
        pipeline.generate_data(out)
        return time.perf_counter() - t0


def ddp_run(nproc: int, results: Path, epochs: int) -> tuple[float, list[float]]:
    """Wall time of a Lorenz96 default-profile run (MNO only, cached data) on `nproc` processes, and its
    offline loss curve."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "surrogate", "--results", str(results), "run", "--fresh",
           str(ROOT / "cases" / "lorenz96_mno.yaml"), "-q", f"train.epochs={epochs}", "train.rollout_epochs=0",
           "evaluate.baselines=[null]", "evaluate.cost=[]", "data.transfer_K=[]"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    return seconds, read_json(results / "lorenz96_mno" / "latest" / "model" / "training.json")["mno"]["offline"]


# (label, case file, overrides on the smoke profile, method whose loop is timed): smoke data, the
# default profile's model, enough steps that the loop outlasts the start-up of the process group
TRAINING_LOOPS = [
    ("prose", "prose.yaml", ["surrogate.width=128", "surrogate.heads=4", "surrogate.ffn=512",
                             "surrogate.data_layers=2", "surrogate.symbol_encoder_layers=2",
                             "surrogate.fusion_layers=2", "surrogate.operator_layers=2",
                             "surrogate.symbol_decoder_layers=2", "surrogate.max_len=160", "train.steps=24",
                             "train.steps_per_epoch=8", "train.batch_size=64", "evaluate.baselines=[]"], "prose"),
    # the smoke data has 6 training samples: 7 df72/df342 scenarios of 16 iterations give 60
    ("dragonfly_smart", "dragonfly_smart.yaml", ["data.train={df72: 6, df342: 1}", "data.iterations=16",
                                                 "surrogate.d_model=32", "surrogate.gnn_hidden=32",
                                                 "surrogate.layers=2", "train.epochs=30", "train.batch_size=16",
                                                 "evaluate.baselines=[]", "evaluate.hybrid.enabled=false",
                                                 "evaluate.latency_samples=1"], "smart"),
    ("mmgp", "mmgp.yaml", ["evaluate.baselines=[{kind: gnn, time_budget: 600, max_epochs: 16, batch_size: 4}]",
                           "evaluate.figures=0"], "gnn"),
    # the default PIG of Allen-Cahn (4 x 200 Gaussians, 2,000 points, causal weights), 20 L-BFGS steps
    ("pinn", "pig_allen_cahn.yaml", ["surrogate.n_gaussians=200", "train.n_collocation=2000", "train.n_initial=512",
                                     "train.phases=[{optimizer: lbfgs, steps: 20, max_iter: 20, history: 100, "
                                     "resample_every: 10}]", "train.steps_per_epoch=10", "evaluate.baselines=[]"],
     "pig"),
]


REPEATS_NOTE = "each executor ran {} times per dataset, alternating; the fastest runs are compared"
DATA_NOTE = "data_seconds rows: python benchmarks/scaling.py --data-only, on "
LOOPS_NOTE = "samples_per_second_per_process rows: python benchmarks/scaling.py --training-loops, on "


def loop_throughput(run: Path, family: str, method: str) -> tuple[float, float, list[float]]:
    """(samples trained, seconds of the training loop, loss curve) of `method` in a finished run."""
    if family == "pinn":  # points of the residual per step; seconds of rank 0's training clock (CPU time)
        curve = read_json(run / "model" / f"{method}.json")["curve"]
        points = read_yaml(run / "case.yaml")["train"]["n_collocation"]
        return curve["step"][-1] * points, curve["seconds"][-1], curve["loss"]
    if family == "mmgp":
        gnn = read_json(run / "model" / f"{method}.json")
        return gnn["steps"] * gnn["batch_size"], gnn["train_seconds"], gnn["loss"]
    history = read_json(run / "model" / "training.json")[method]
    if family == "prose":
        return history["steps"] * history["batch_size"], history["seconds"], history["loss"]
    return len(history["loss"]) * history["samples_per_epoch"], history["wall_seconds"], history["loss"]


def training_loop_run(nproc: int, results: Path, case_file: str, overrides: list[str]) -> tuple[Path, float]:
    """The folder of a fresh run and its wall time, start-up and evaluation included."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "surrogate", "--results", str(results), "run", "--fresh",
           str(ROOT / "cases" / case_file), "-p", "smoke", "-q", *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    return (results / Path(case_file).stem / "latest").resolve(), time.perf_counter() - t0  # not the moving link


def training_loop_rows(only: list[str] | None = None) -> list[dict]:
    """Samples per second per process of each family's training loop, 1 vs 2 gloo processes."""
    rows = []
    for family, case_file, overrides, method in TRAINING_LOOPS:
        if only and family not in only:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            training_loop_run(1, Path(tmp), case_file, overrides)  # solver data into the cache, untimed
            load = os.getloadavg()[0]  # the machine is shared: how busy it was when the pair started
            runs = {nproc: training_loop_run(nproc, Path(tmp), case_file, overrides) for nproc in (1, 2)}
            measured = {nproc: loop_throughput(run, family, method) for nproc, (run, _) in runs.items()}
        (samples, seconds_one, curve_one), (_, seconds_two, curve_two) = measured[1], measured[2]
        one, two = samples / seconds_one, samples / seconds_two / 2
        gap = max(abs(a - b) / abs(a) for a, b in zip(curve_one, curve_two))
        rows.append(metric_row("torchrun_2_gloo", f"samples_per_second_per_process[{family}]", two, unit="1/s",
                               single_process=one, ratio_to_single=two / one, samples=samples,
                               loop_seconds_single=seconds_one, loop_seconds_two=seconds_two,
                               max_rel_loss_gap=gap, load_average=load, run_wall_seconds_single=runs[1][1],
                               run_wall_seconds_two=runs[2][1]))
        print(f"{family:<16} samples/s per process: 1 process {one:8.1f}   2 processes {two:8.1f}   "
              f"ratio {two / one:.2f}   loss gap {gap:.2g}", flush=True)
    return rows


def merged(rows: list[dict], path: Path) -> list[dict]:
    """The rows of `path` with those measured now replaced or added (same method and metric)."""
    old = read_json(path)["rows"] if path.exists() else []
    new_keys = {(r["method"], r["metric"]) for r in rows}
    return [r for r in old if (r["method"], r["metric"]) not in new_keys] + rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke datasets only, no DDP")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternated runs per executor and dataset; the fastest of each is compared")
    parser.add_argument("--epochs", type=int, default=10, help="offline epochs of the DDP measurement")
    parser.add_argument("--data-only", action="store_true",
                        help="only the executor comparison (smoke and default); other rows of the JSON are kept")
    parser.add_argument("--training-loops", action="store_true",
                        help="only the PROSE, SMART, MMGP GNN and PIG loops under torchrun; "
                        "other rows of the JSON are kept")
    parser.add_argument("--families", nargs="*",
                        help="with --training-loops: only these (prose dragonfly_smart mmgp pinn)")
    args = parser.parse_args(argv)
    out = ROOT / "benchmarks" / "results" / "scaling.json"
    if args.training_loops:
        rows = merged(training_loop_rows(args.families), out)
        previous = read_json(out) if out.exists() else {}
        notes = [n for n in previous.get("notes", []) if not n.startswith(LOOPS_NOTE)]
        notes.append(LOOPS_NOTE + dt.date.today().isoformat())
        result = {**previous, "family": "scaling", "rows": rows, "notes": notes}
        print(metrics_table({"rows": rows}))
        write_json(out, result)
        return
    rows = []
    for case_file, profile, overrides, label in DATASETS:
        if args.quick and profile != "smoke":
            continue
        # alternated and repeated: on a shared machine the other load drifts between two single runs
        local_runs, dask_runs = [], []
        for _ in range(args.repeats):
            local_runs.append(data_seconds(case_file, profile, overrides, []))
            dask_runs.append(data_seconds(case_file, profile, overrides, ["executor.dask=local"]))
        local, dask = min(local_runs), min(dask_runs)
        rows.append(metric_row("dask_local_2_workers", f"data_seconds[{label}]", dask, local_seconds=local,
                               ratio_to_local=dask / local, local_runs=local_runs, dask_runs=dask_runs))
        print(f"{label:<26} local {local:7.2f} s   dask {dask:7.2f} s   ratio {dask / local:.2f}", flush=True)
    if args.data_only:
        previous = read_json(out) if out.exists() else {}
        rows = merged(rows, out)
        notes = [n for n in previous.get("notes", []) if not n.startswith(("each executor", DATA_NOTE))]
        notes += [REPEATS_NOTE.format(args.repeats), DATA_NOTE + dt.date.today().isoformat()]
        print(metrics_table({"rows": rows}))
        write_json(out, {**previous, "family": "scaling", "rows": rows, "notes": notes})
        return
    if not args.quick:
        with tempfile.TemporaryDirectory() as tmp:
            ddp_run(1, Path(tmp), 1)  # solver data into the cache, so that the timed runs only train
            one, curve_one = ddp_run(1, Path(tmp), args.epochs)
            two, curve_two = ddp_run(2, Path(tmp), args.epochs)
        gap = max(abs(a - b) / abs(a) for a, b in zip(curve_one, curve_two))
        rows.append(metric_row("torchrun_2_gloo", "run_seconds_lorenz96_default", two, single_process_seconds=one,
                               speedup=one / two, epochs=args.epochs, max_rel_loss_gap=gap))
        print(f"torchrun 2 processes: {two:.0f} s vs 1 process {one:.0f} s (speedup {one / two:.2f}); "
              f"loss curves differ by at most {gap:.2g} (relative)", flush=True)
        rows += training_loop_rows()
    result = {
        "family": "scaling", "date": dt.date.today().isoformat(), "machine": "2 CPU cores (shared), no GPU",
        "command": "python benchmarks/scaling.py" + (" --quick" if args.quick else ""), "seeds": [0], "rows": rows,
        "notes": ["both executors use 2 workers; each measurement starts from an empty cache",
                  REPEATS_NOTE.format(args.repeats),
                  "mmgp default dataset replaced by its first 40 training samples (time)",
                  *([] if args.quick else [LOOPS_NOTE + dt.date.today().isoformat()])],
    }
    print(metrics_table({"rows": rows}))
    write_json(out, result)


if __name__ == "__main__":
    main()

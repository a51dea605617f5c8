"""Beyond one process: solver data on local processes vs a Dask LocalCluster, and training under
torchrun (1 vs 2 gloo processes). Prints the table and writes benchmarks/results/scaling.json.

    python benchmarks/scaling.py                    # smoke and default datasets, DDP on the default profile
    python benchmarks/scaling.py --quick            # smoke datasets only

Every measurement starts from an empty cache, so the solver really runs; both executors get
`workers` = 2 on this 2-core machine. The MMGP default dataset (704 nonlinear FEM solves, about
20 min per executor here) is replaced by its first 40 training samples and 1 test sample, said so in the rows.
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
from surrogate.core.case import load_case  # noqa: E402
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke datasets only, no DDP")
    parser.add_argument("--epochs", type=int, default=10, help="offline epochs of the DDP measurement")
    args = parser.parse_args(argv)
    rows = []
    for case_file, profile, overrides, label in DATASETS:
        if args.quick and profile != "smoke":
            continue
        local = data_seconds(case_file, profile, overrides, [])
        dask = data_seconds(case_file, profile, overrides, ["executor.dask=local"])
        rows.append(metric_row("dask_local_2_workers", f"data_seconds[{label}]", dask, local_seconds=local,
                               ratio_to_local=dask / local))
        print(f"{label:<26} local {local:7.1f} s   dask {dask:7.1f} s   ratio {dask / local:.2f}", flush=True)
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
    result = {
        "family": "scaling", "date": dt.date.today().isoformat(), "machine": "2 CPU cores (shared), no GPU",
        "command": "python benchmarks/scaling.py" + (" --quick" if args.quick else ""), "seeds": [0], "rows": rows,
        "notes": ["both executors use 2 workers; each measurement starts from an empty cache",
                  "mmgp default dataset replaced by its first 40 training samples (time)"],
    }
    print(metrics_table({"rows": rows}))
    write_json(ROOT / "benchmarks" / "results" / "scaling.json", result)


if __name__ == "__main__":
    main()

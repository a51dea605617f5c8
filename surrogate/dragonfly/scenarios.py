"""Interference scenarios (a target job among co-runners) and the splits the surrogate is judged on.

A scenario is one packet-level run: the target job (job 0) plus co-runners arriving at staggered times
with their own iteration counts, optional uniform random background traffic, a placement seed and a
compute-jitter seed. Splits:

- train / validation: the training presets (72 and 342 nodes), co-runner combinations from a training
  list that never contains the held-out workload; validation scenarios pick the training epoch;
- calibration: drawn like test_seeds (given counts per preset, so the preset mix can match the tests'),
  from a stream of their own; only the conformal interval offsets are measured on them, so they are
  exchangeable with test_seeds and not used for any other choice;
- test_seeds: the same kind of scenarios with new placement and jitter seeds;
- test_unseen: co-runner combinations never used in training, half of them with the held-out workload;
- test_transfer: the transfer preset (1,056 nodes), never seen in training;
- jitter: test_seeds scenarios re-run with other compute-jitter seeds only (the error floor), `jitter_runs`
  re-runs each, ordered re-run by re-run.
"""
from __future__ import annotations

import itertools
import json
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import xarray as xr

from .topology import Dragonfly
from .workloads import APPS, Background, Job, run_workloads

# per-app compute (µs) and message scale for the scenarios: communication and compute of the same order,
# so that interference shows in the runtimes and a run of tens of iterations stays short
APP_SETTINGS = {
    "milc": {"compute_us": 150.0, "message_scale": 0.25},
    "nekbone": {"compute_us": 120.0, "message_scale": 1.0},
    "cosmoflow": {"compute_us": 200.0, "message_scale": 0.1},
    "fft": {"compute_us": 120.0, "message_scale": 1.0},
    "io": {"compute_us": 150.0, "message_scale": 0.25},
}
TARGET_FRACTION, CORUNNER_FRACTION = 0.22, 0.16      # of the nodes, per job
SPLITS = ("train", "validation", "calibration", "test_seeds", "test_unseen", "test_transfer", "jitter")


@dataclass(frozen=True)
class Scenario:
    preset: str
    target: str
    target_placement: str
    corunners: tuple = ()
    corunner_placements: tuple = ()
    corunner_starts_us: tuple = ()
    corunner_iterations: tuple = ()
    background_gib_s: float = 0.0
    iterations: int = 30
    placement_seed: int = 0
    jitter_seed: int = 0
    jitter: float = 0.05
    routing: str = "par"
    split: str = "train"

    def topology(self) -> Dragonfly:
        return Dragonfly.preset(self.preset)

    def jobs(self, n_nodes: int, alone: bool = False) -> list[Job]:
        """The target (job 0) and its co-runners; `alone` keeps the target only."""
        ranks_t = max(4, round(TARGET_FRACTION * n_nodes))
        ranks_c = max(4, round(CORUNNER_FRACTION * n_nodes))
        jobs = [Job(self.target, ranks_t, self.iterations, jitter=self.jitter, placement=self.target_placement,
                    **APP_SETTINGS[self.target])]
        if not alone:
            for app, place, start, its in zip(self.corunners, self.corunner_placements, self.corunner_starts_us,
                                              self.corunner_iterations):
                jobs.append(Job(app, ranks_c, int(its), jitter=self.jitter, placement=place, start_us=float(start),
                                **APP_SETTINGS[app]))
        return jobs

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Scenario":
        d = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def simulate(sc: Scenario, *, window_us: float = 20.0, dt_ns: float = 500.0, alone: bool = False,
             fidelity: str = "packet") -> xr.Dataset:
    """Run a scenario until its target job ends; the run_workloads dataset with the scenario in its attributes."""
    topo = sc.topology()
    bg = Background(sc.background_gib_s) if sc.background_gib_s > 0 and not alone else None
    ds = run_workloads(topo, sc.jobs(topo.n_nodes, alone), background=bg, fidelity=fidelity, seed=sc.placement_seed,
                       jitter_seed=sc.jitter_seed, routing=sc.routing, window_ns=window_us * 1e3, dt_ns=dt_ns,
                       max_time_us=1e6, stop_after_job=0)
    ds.attrs.update(scenario=sc.to_json(), split=sc.split, preset=sc.preset, target_app=sc.target,
                    corunner_apps=",".join(sc.corunners) or "none")
    return ds


def _combos(apps: list[str], max_size: int) -> list[tuple[str, ...]]:
    return [c for n in range(1, max_size + 1) for c in itertools.combinations_with_replacement(apps, n)]


def make_splits(*, train: dict[str, int], n_test_seeds: int, n_test_unseen: int, n_transfer: int, n_jitter: int,
                validation_fraction: float, iterations: int, transfer_preset: str, held_out_app: str,
                max_corunners: int, seed: int, transfer_iterations: int | None = None,
                apps: list[str] | None = None, calibration: dict[str, int] | None = None,
                jitter_runs: int = 1) -> dict[str, list[Scenario]]:
    """Every scenario of every split, drawn from seeded streams (see the module docstring).

    Train, validation and test scenarios come from one stream; `calibration` scenarios from a second one, so
    adding them leaves every other scenario unchanged.
    Transfer scenarios run `transfer_iterations` (default: `iterations`) without background traffic, which
    would dominate the cost of the largest system. `apps` restricts the training workloads (default: all
    but the held-out one).
    """
    if held_out_app not in APPS:
        raise ValueError(f"held_out_app must be one of {APPS}, got {held_out_app!r}")
    rng = np.random.default_rng([seed, 6])
    apps = [a for a in (apps or APPS) if a != held_out_app]
    combos = _combos(apps, max_corunners)
    order = rng.permutation(len(combos))
    n_unseen = max(1, len(combos) // 4)
    unseen = [combos[i] for i in order[:n_unseen]]
    seen = [combos[i] for i in order[n_unseen:]]
    with_held = [c + (held_out_app,) for c in _combos(apps, max(0, max_corunners - 1))] + [(held_out_app,)]
    next_seed = itertools.count(1000 * seed + 1)

    def draw(preset: str, split: str, pool: list[tuple[str, ...]], its: int = iterations,
             background: bool = True, rng=rng, next_seed=next_seed) -> Scenario:
        co = pool[rng.integers(len(pool))]
        est_us = its * 250.0                               # rough target duration, for staggered arrivals
        place = lambda: str(rng.choice(["random", "contiguous"], p=[0.7, 0.3]))  # noqa: E731
        return Scenario(
            preset=preset, target=str(rng.choice(apps)), target_placement=place(), corunners=tuple(co),
            corunner_placements=tuple(place() for _ in co),
            corunner_starts_us=tuple(float(x) for x in rng.uniform(0, 0.6 * est_us, len(co)).round(1)),
            corunner_iterations=tuple(int(x) for x in rng.integers(max(2, its // 4), its + 1, len(co))),
            background_gib_s=float(rng.choice([0.0, 0.5, 1.5])) * background, iterations=its,
            placement_seed=next(next_seed), jitter_seed=next(next_seed), split=split)

    train_all = [draw(p, "train", seen) for p, n in train.items() for _ in range(n)]
    idx = rng.permutation(len(train_all))
    n_val = int(round(validation_fraction * len(train_all))) if len(train_all) > 1 else 0
    n_val = min(max(n_val, 1 if validation_fraction > 0 and len(train_all) > 1 else 0), len(train_all) - 1)
    val_idx = set(idx[:n_val].tolist())
    splits = {
        "train": [s for i, s in enumerate(train_all) if i not in val_idx],
        "validation": [_with_split(s, "validation") for i, s in enumerate(train_all) if i in val_idx],
    }
    presets = list(train)
    splits["test_seeds"] = [draw(presets[i % len(presets)], "test_seeds", seen) for i in range(n_test_seeds)]
    splits["test_unseen"] = [draw(presets[i % len(presets)], "test_unseen", unseen if i % 2 else with_held)
                             for i in range(n_test_unseen)]
    splits["test_transfer"] = [draw(transfer_preset, "test_transfer", seen, transfer_iterations or iterations, False)
                               for _ in range(n_transfer)]
    splits["jitter"] = [_with_split(s, "jitter", jitter_seed=s.jitter_seed + 7919 * (r + 1))
                        for r in range(jitter_runs) for s in splits["test_seeds"][:n_jitter]]
    cal_rng, cal_seed = np.random.default_rng([seed, 6, 1]), itertools.count(10**6 * (seed + 1) + 1)
    splits["calibration"] = [draw(p, "calibration", seen, rng=cal_rng, next_seed=cal_seed)
                             for p, n in (calibration or {}).items() for _ in range(n)]
    return splits


def _with_split(sc: Scenario, split: str, **changes) -> Scenario:
    d = asdict(sc) | {"split": split} | changes
    return Scenario(**d)


def simulate_task(task: dict[str, Any]) -> xr.Dataset:
    """One solver task: a scenario simulated at packet level, counters stored as float32. It lives here,
    not in the pipeline, so that a Dask worker running it imports no torch."""
    t0 = time.perf_counter()
    ds = simulate(task["scenario"], window_us=task["window_us"], dt_ns=task["dt_ns"])
    for name in ("port_bytes", "port_busy_time", "port_stalls"):
        ds[name] = ds[name].astype(np.float32)
    ds.attrs["wall_seconds"] = round(time.perf_counter() - t0, 2)
    return ds

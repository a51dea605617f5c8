"""The dragonfly pipeline: interference scenarios -> SMART-style forecaster and baselines -> held-out
forecasts, interval coverage, latency, jitter error floor and the hybrid simulation."""
from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core.executor import map_tasks
from surrogate.core.methods import method_name, write_index
from surrogate.core.report import metric_row, save_figure
from surrogate.core.runner import Pipeline
from surrogate.core.store import RunFolder, data_path, read_data, read_json, write_data, write_json

from . import methods as M
from .hybrid import hybrid_scenario, run_hybrid
from .scenarios import Scenario, make_splits, simulate_task
from .schema import DragonflyCase

TEST_SPLITS = ("test_seeds", "test_unseen", "test_transfer")
TABLE = ["mape_heldout", "mape_test_seeds", "mape_test_unseen", "mape_test_transfer", "coverage80_heldout",
         "coverage95_heldout", "latency_ms"]


def mape(pred: np.ndarray, ref: np.ndarray) -> float:
    """Mean absolute percentage error, in percent."""
    return float(100 * np.mean(np.abs(pred - ref) / np.abs(ref))) if len(ref) else float("nan")


def interval_coverage(q: np.ndarray, ref: np.ndarray, level: float) -> float:
    """Fraction of references inside the central interval of the given level (quantile columns of LEVELS)."""
    from .smart import LEVELS

    lo, hi = LEVELS[level]
    return float(np.mean((ref >= q[:, lo]) & (ref <= q[:, hi]))) if len(ref) else float("nan")


class DragonflyPipeline(Pipeline):
    Case = DragonflyCase
    family = "dragonfly"

    # ----------------------------------------------------------------- data
    @classmethod
    def data_config(cls, case: DragonflyCase) -> dict[str, Any]:
        return {"format": 2, "seed": case.seed, "simulator": case.simulator.model_dump(),
                "data": case.data.model_dump(exclude={"steps", "validation_fraction"}
                                             | ({"apps"} if case.data.apps is None else set())
                                             | ({"format"} if case.data.format == "netcdf" else set())),
                "validation_fraction": case.data.validation_fraction}

    def splits(self) -> dict[str, list[Scenario]]:
        d, s = self.case.data, self.case.simulator
        splits = make_splits(train=d.train, n_test_seeds=d.n_test_seeds, n_test_unseen=d.n_test_unseen,
                             n_transfer=d.n_transfer, n_jitter=d.n_jitter, validation_fraction=d.validation_fraction,
                             iterations=d.iterations, transfer_preset=d.transfer_preset, held_out_app=d.held_out_app,
                             max_corunners=d.max_corunners, seed=self.case.seed,
                             transfer_iterations=d.transfer_iterations, apps=d.apps, calibration=d.calibration,
                             jitter_runs=d.jitter_runs)
        from dataclasses import replace

        return {k: [replace(sc, routing=s.routing, jitter=s.jitter) for sc in v] for k, v in splits.items()}

    def generate_data(self, out: Path) -> None:
        sim = self.case.simulator
        todo = [(f"{split}_{i:03d}", sc) for split, scenarios in self.splits().items()
                for i, sc in enumerate(scenarios) if data_path(out / f"{split}_{i:03d}.nc") is None]
        tasks = [{"scenario": sc, "window_us": sim.window_us, "dt_ns": sim.dt_ns} for _, sc in todo]

        def write(i: int, ds: xr.Dataset) -> None:
            name, sc = todo[i]
            write_data(ds, out / f"{name}.nc", self.case.data.format)
            self.log(f"data: {name}: {sc.preset} {sc.target} with {','.join(sc.corunners)} "
                     f"({ds.attrs['wall_seconds']} s)")

        map_tasks(simulate_task, tasks, [name for name, _ in todo], write, self.case.executor, self.case.workers,
                  log=self.log)

    def _runs(self, data: Path, split: str) -> list[xr.Dataset]:
        files = sorted(data.glob(f"{split}_*.nc")) or sorted(data.glob(f"{split}_*.zarr"))
        return [read_data(p) for p in files]

    @classmethod
    def batch_sizes(cls, case: DragonflyCase) -> dict[str, int]:
        return {f"{m.label}: train.batch_size": case.train_for(m).batch_size for m in case.methods
                if m.kind in M.smart.KINDS}

    def _samples(self, data: Path, split: str) -> list[M.Samples]:
        return M.samples_from_runs(self._runs(data, split), self.case.data.steps)

    # ----------------------------------------------------------------- fit
    def _build(self, spec) -> M.Method:
        torch.manual_seed(self.case.seed * 1_000_003 + zlib.crc32(spec.label.encode()))
        return M.build(spec.kind, spec.label, self.case.data.steps, spec.init_args())

    def fit(self, data: Path) -> None:
        case = self.case
        model_dir = self.run.sub("model")
        hist_file = model_dir / "training.json"
        history = read_json(hist_file) if hist_file.exists() else {}
        train, val, cal = (self._samples(data, split) for split in ("train", "validation", "calibration"))
        self.log(f"fit: {sum(map(len, train))} training, {sum(map(len, val))} validation and "
                 f"{sum(map(len, cal))} calibration samples")
        write_index(model_dir, case.surrogate.label, [m.label for m in case.methods])
        for spec in case.methods:
            if (model_dir / f"{spec.label}.json").exists():
                continue
            method = self._build(spec)
            method.metadata = self._metadata(spec)
            t0 = time.perf_counter()
            losses = method.fit(train, cal, case.train_for(spec), self.run.sub("checkpoints") / f"{spec.label}.pt",
                                case.seed, validation=val)
            history[spec.label] = {"loss": losses, "wall_seconds": round(time.perf_counter() - t0, 2),
                                   "samples_per_epoch": sum(map(len, train))}
            method.save(model_dir)
            write_json(hist_file, history)
            self.log(f"fit: {spec.label} ({history[spec.label]['wall_seconds']} s)"
                     + (f", final loss {losses[-1]:.4g}" if losses else ""))

    def _metadata(self, spec) -> dict:
        d = self.case.data
        return {"case": self.case.name, "method": spec.label, "steps": d.steps, "train_presets": list(d.train),
                "inputs": {"counters_window": {"shape": f"({d.steps}, routers, ports, 3)",
                                               "units": "bytes/us, 1, 1/us",
                                               "long_name": "per-iteration port counter rates: bytes, "
                                                            "buffer-full fraction, stalls"},
                           "runtimes_us": {"shape": f"({d.steps},)", "units": "us",
                                           "long_name": "runtimes of the same iterations"},
                           "job_routers": {"shape": "(ranks,)", "units": "1", "long_name": "router of each rank"}},
                "outputs": {"runtime_us": {"units": "us", "long_name": "next-iteration runtime (median)"},
                            "intervals": "low80/high80, low95/high95 (us)"}}

    # ------------------------------------------------------------ evaluate
    def _methods(self, data: Path) -> dict[str, M.Method]:
        model_dir = self.run.path / "model"
        out = {}
        train = None
        for spec in self.case.methods:
            m = M.load_method(model_dir, spec.label)
            if isinstance(m, M.TreeAggregates):      # not stored (no pickling): refit, deterministic
                train = train or self._samples(data, "train")
                m.fit(train, [], seed=self.case.seed)
            out[spec.label] = m
        return out

    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        case = self.case
        ours = case.surrogate.label
        models = self._methods(data)
        tests = {s: self._samples(data, s) for s in TEST_SPLITS}
        rows, preds = [], {}
        for name, m in models.items():
            per = {}
            for split, groups in tests.items():
                if not groups:
                    continue
                t0 = time.perf_counter()
                q = m.predict(groups)
                per[split] = (q, np.concatenate([g.y for g in groups]), time.perf_counter() - t0)
            preds[name] = per
            allq = np.concatenate([v[0] for v in per.values()])
            ally = np.concatenate([v[1] for v in per.values()])
            for split, (q, y, _) in [*per.items(), ("heldout", (allq, ally, 0))]:
                rows += [metric_row(name, f"mape_{split}", mape(q[:, 2], y), unit="%", n=len(y)),
                         metric_row(name, f"coverage80_{split}", interval_coverage(q, y, 0.8)),
                         metric_row(name, f"coverage95_{split}", interval_coverage(q, y, 0.95))]
            first = next(g for g in tests["test_seeds"] + tests["test_unseen"])
            rows.append(metric_row(name, "latency_ms", M.forecast_latency_ms(m, first, case.evaluate.latency_samples),
                                   unit="ms", preset=first.preset))
            if tests["test_transfer"]:
                tr = tests["test_transfer"][0]
                rows.append(metric_row(name, f"latency_ms_{tr.preset}",
                                       M.forecast_latency_ms(m, tr, case.evaluate.latency_samples), unit="ms"))
            self.log(f"evaluate: {name}: held-out MAPE {mape(allq[:, 2], ally):.3g} %")
        rows += self._jitter_floor(data)
        base = [r for r in rows if r["metric"] == "mape_heldout" and r["method"] not in (ours, "jitter_floor")
                and r["method"] in models]
        best = min(base, key=lambda r: r["value"]) if base else None
        head = next(r for r in rows if r["method"] == ours and r["metric"] == "mape_heldout")
        if best is not None:
            rows.append(metric_row(ours, "mape_reduction_vs_best_baseline", 100 * (1 - head["value"] / best["value"]),
                                   unit="%", versus=best["method"]))
        if case.evaluate.hybrid.enabled:
            rows += self._hybrid(models[ours])
        metrics = {"surrogate": ours, "methods": list(models), "table_metrics": TABLE,
                   "headline": {k: head[k] for k in ("method", "metric", "value")}, "rows": rows}
        return metrics, self._predictions(preds, tests)

    def _jitter_floor(self, data: Path) -> list[dict]:
        """The error floor set by compute jitter, from test_seeds scenarios re-run with other jitter seeds only.

        jitter_floor: MAPE between a scenario's runtimes and its first re-run (two noisy runs).
        oracle_expected_runtime: MAPE of the per-iteration expected runtime (what a perfect forecaster of
        the mean would say) against one run, estimated from K >= 2 runs: the leave-one-out error
        |r_k - mean of the others| has sqrt(K / (K - 1)) times the spread of |r_k - mean| for independent
        noise, so it is scaled back by sqrt((K - 1) / K).
        """
        steps = self.case.data.steps
        base, jit = self._runs(data, "test_seeds"), self._runs(data, "jitter")
        if not jit:
            return []
        nb = min(self.case.data.n_jitter, len(base))                # jitter files run re-run by re-run
        runs = [[base[i]] + jit[i::nb] for i in range(nb)]
        floor, oracle = [], []
        for group in runs:
            r = [g["iteration_runtime"].values[0] for g in group]
            n = min(map(len, r))
            r = np.stack([x[steps + 1:n] for x in r])            # (K, iterations), as the forecast targets
            floor.append(np.abs(r[1] - r[0]) / r[0])
            K = len(r)
            loo = (r.sum(0, keepdims=True) - r) / (K - 1)
            oracle.append(np.sqrt((K - 1) / K) * np.abs(r - loo) / r)
        rows = [metric_row("jitter_floor", "mape_test_seeds", 100 * float(np.nanmean(np.concatenate(floor))),
                           unit="%", n=int(sum(map(len, floor))))]
        oracle_all = np.concatenate([o.ravel() for o in oracle])
        rows.append(metric_row("oracle_expected_runtime", "mape_test_seeds", 100 * float(np.nanmean(oracle_all)),
                               unit="%", n=int(oracle_all.size), runs=len(runs[0])))
        return rows

    def _hybrid(self, model: M.Method) -> list[dict]:
        hy, sim = self.case.evaluate.hybrid, self.case.simulator
        if not isinstance(model, M.Neural):
            self.log("evaluate: hybrid skipped (the surrogate is not a neural forecaster)")
            return []
        sc = hybrid_scenario(hy, sim)
        kw = {"window_us": sim.window_us, "dt_ns": sim.dt_ns, "steps": self.case.data.steps}
        ref = run_hybrid(sc, None, **kw)
        rows = [metric_row("packet_level", "hybrid_wall_s", ref["wall_s"], unit="s", preset=sc.preset),
                metric_row("packet_level", "hybrid_target_runtime_us", ref["target_runtime_us"], unit="us")]
        self.log(f"evaluate: all-packet run of the hybrid scenario: {ref['wall_s']:.2f} s wall")
        state = {k: v.clone() for k, v in model.net.state_dict().items()}
        for w in hy.width_thresholds:
            model.net.load_state_dict(state)                  # every threshold starts from the trained model
            out = run_hybrid(sc, model, width_threshold=w, drift_threshold=hy.drift_threshold, warmup=hy.warmup,
                             recheck=hy.recheck, max_surrogate=hy.max_surrogate, tune_steps=hy.tune_steps,
                             settle=hy.settle, **kw)
            err = 100 * abs(out["target_runtime_us"] - ref["target_runtime_us"]) / ref["target_runtime_us"]
            tag = f"w{w:g}"
            rows += [metric_row("hybrid", f"speedup_{tag}", ref["wall_s"] / out["wall_s"], preset=sc.preset),
                     metric_row("hybrid", f"surrogate_fraction_{tag}", out["surrogate_fraction"]),
                     metric_row("hybrid", f"runtime_error_{tag}", err, unit="%"),
                     metric_row("hybrid", f"wall_s_{tag}", out["wall_s"], unit="s"),
                     metric_row("hybrid", f"switches_{tag}", out["switches"])]
            self.log(f"evaluate: hybrid width<{w:g}: speedup {ref['wall_s'] / out['wall_s']:.2f}x, surrogate "
                     f"{100 * out['surrogate_fraction']:.0f}% of simulated time, runtime error {err:.2f}%")
        model.net.load_state_dict(state)
        return rows

    def _predictions(self, preds: dict, tests: dict) -> xr.Dataset:
        names = list(preds)
        splits = [s for s in TEST_SPLITS if tests[s]]
        split_of = np.concatenate([[s] * sum(map(len, tests[s])) for s in splits])
        ref = np.concatenate([np.concatenate([g.y for g in tests[s]]) for s in splits])
        scen = np.concatenate([np.concatenate([g.scenario for g in tests[s]]) for s in splits])
        it = np.concatenate([np.concatenate([g.iteration for g in tests[s]]) for s in splits])
        last = np.concatenate([np.concatenate([g.rt[:, -1] for g in tests[s]]) for s in splits])
        q = np.stack([np.concatenate([preds[n][s][0] for s in splits]) for n in names])
        a = lambda u, ln: {"units": u, "long_name": ln}  # noqa: E731
        return xr.Dataset(
            {"runtime_reference": (("sample",), ref, {**a("us", "simulated next-iteration runtime"),
                                                      "surrogate_role": "reference"}),
             "runtime_quantiles": (("method", "sample", "quantile"), q,
                                   {**a("us", "forecast runtime quantiles"), "surrogate_role": "prediction"}),
             "runtime_last": (("sample",), last, a("us", "runtime of the last observed iteration")),
             "split": (("sample",), split_of.astype(str), a("1", "held-out split")),
             "scenario": (("sample",), scen, a("1", "scenario index within the split")),
             "forecast_iteration": (("sample",), it, a("1", "iteration forecast"))},
            coords={"method": ("method", names, a("1", "forecasting method")),
                    "sample": ("sample", np.arange(len(ref)), a("1", "held-out sample")),
                    "quantile": ("quantile", np.array(M.QUANTILES), a("1", "quantile level"))},
            attrs={"title": f"Dragonfly runtime forecasts of case {self.case.name}", "surrogate_family": "dragonfly",
                   "surrogate_case": self.case.name, "seed": self.case.seed})

    # --------------------------------------------------------------- report
    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = self.run.sub("figures")
        p = predictions
        ours = metrics["surrogate"]
        sel = (p.split == p.split.values[0]) & (p.scenario == p.scenario.values[0])
        fig, ax = plt.subplots(figsize=(7, 3.8))
        it = p.forecast_iteration.values[sel.values]
        ax.plot(it, p.runtime_reference.values[sel.values], "k.-", label="simulated")
        q = p.runtime_quantiles.sel({"method": ours}).values[sel.values]
        ax.plot(it, q[:, 2], label=f"{ours} median")
        ax.fill_between(it, q[:, 0], q[:, 4], alpha=0.2, label="95% interval")
        ax.fill_between(it, q[:, 1], q[:, 3], alpha=0.3, label="80% interval")
        ax.set(xlabel="iteration", ylabel="runtime (µs)", title="Next-iteration runtime, one held-out scenario")
        ax.legend(fontsize=7)
        save_figure(fig, figs / "forecast.png")

        rows = [r for r in metrics["rows"] if r["metric"] == "mape_heldout"]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar([r["method"] for r in rows], [r["value"] for r in rows])
        ax.set(ylabel="MAPE (%)", title="Held-out next-iteration MAPE")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        save_figure(fig, figs / "mape.png")

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, run: RunFolder, device: str = "cpu", method: str | None = None) -> M.Method:
        model_dir = run.path / "model"
        return M.load_method(model_dir, method_name(model_dir, method), device)

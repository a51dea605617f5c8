"""The mmgp pipeline: specimens -> FEM -> morphing, POD and GPs -> fields and scalars with uncertainty."""
from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core import metrics as M
from surrogate.core.methods import method_name, write_index
from surrogate.core.report import metric_row, save_figure
from surrogate.core.runner import Pipeline
from surrogate.core.store import RunFolder, read_json, write_json
from surrogate.mmgp import data as D
from surrogate.mmgp.data import FIELDS
from surrogate.mmgp.fem import SCALAR_OUTPUTS, solve_specimen
from surrogate.mmgp.figures import field_panels
from surrogate.mmgp.geometry import SpecimenFamily
from surrogate.mmgp.gnn import GNNSurrogate
from surrogate.mmgp.model import MMGP
from surrogate.mmgp.schema import MMGPCase


def specimen_family(case: MMGPCase) -> SpecimenFamily:
    family = SpecimenFamily.from_file(case.geometry.definition)
    return family.with_mesh_size(case.geometry.mesh_size)


class MMGPPipeline(Pipeline):
    Case = MMGPCase
    family = "mmgp"

    @classmethod
    def data_config(cls, case: MMGPCase) -> dict[str, Any]:
        d = case.data
        return {"format": 2, "seed": case.seed, "geometry": specimen_family(case).settings(),
                "physics": case.physics.model_dump(mode="json"),
                "counts": {"train": d.n_train, "test": d.n_test, "ood": d.n_ood},
                **({"data_format": d.format} if d.format != "netcdf" else {})}

    @classmethod
    def batch_sizes(cls, case: MMGPCase) -> dict[str, int]:
        return {f"{m.label}: batch_size": m.batch_size for m in case.methods if m.kind == "gnn"}

    def generate_data(self, out: Path) -> None:
        cfg = self.data_config(self.case)
        write_json(out / "config.json", cfg)
        reuse_samples(out, cfg, self.log)
        D.generate(out, self.case.seed, specimen_family(self.case), cfg["physics"], cfg["counts"],
                   self.case.executor, self.case.workers, self.log, self.case.data.format)

    # ----------------------------------------------------------------- fit
    def _build(self, spec):
        if spec.kind == "gnn":
            return GNNSurrogate(spec.hidden, spec.layers, spec.lr, spec.batch_size)
        if spec.kind == "oracle_gp":
            base = self.case.surrogate
            return MMGP(**{**mmgp_settings(base), "field_modes": spec.field_modes or base.field_modes,
                           "restarts": spec.restarts or base.restarts, "max_iter": spec.max_iter,
                           "shape_input": "true_parameters"})
        return MMGP(**mmgp_settings(spec))

    def fit(self, data: Path) -> None:
        torch.set_num_threads(1)
        case = self.case
        model_dir = self.run.sub("model")
        timing_file = model_dir / "training.json"
        timing = read_json(timing_file) if timing_file.exists() else {}
        train = D.read_split(data, "train", case.data.n_train)
        self.log(f"fit: {len(train)} training shapes, {np.mean([len(s.nodes) for s in train]):.0f} nodes on average")
        write_index(model_dir, case.surrogate.label, [m.label for m in case.methods])
        # MMGP first: the GNN gets the same training wall time
        for spec in sorted(case.methods, key=lambda m: m.kind == "gnn"):
            if (model_dir / f"{spec.label}.json").exists():
                continue
            model = self._build(spec)
            t0 = time.perf_counter()
            twin = self._trained_twin(spec, model_dir)
            if twin is not None:  # the same GPs, another way to report field uncertainty: no second training
                model = MMGP.load(model_dir, twin)
                model.settings = {**model.settings, "uncertainty": spec.uncertainty}
                timing[spec.label] = {"seconds": timing[twin]["seconds"], "shared_with": twin}
                model.save(model_dir, spec.label)
                write_json(timing_file, timing)
                self.log(f"fit: {spec.label}: the trained GPs of {twin}, with {spec.uncertainty} field uncertainty")
                continue
            if spec.kind == "gnn":
                budget = spec.time_budget or timing.get(case.surrogate.label, {}).get("seconds", 60.0)
                model.fit(train, budget, case.seed, spec.max_epochs, self.run.sub("checkpoints") / f"{spec.label}.pt")
                self.log(f"fit: {spec.label}: {model.steps} steps, {model.epochs} epochs in {budget:.0f} s")
            else:
                model.fit(train, case.seed)
                modes = {"shape": model.shape_pod_.n_modes_, **{f: p.n_modes_ for f, p in model.field_pods_.items()}}
                self.log(f"fit: {spec.label}: modes {modes}, {int(model.hyper_['iterations'])} L-BFGS-B iterations")
            timing[spec.label] = {"seconds": time.perf_counter() - t0}
            model.save(model_dir, spec.label)
            write_json(timing_file, timing)
            self.log(f"fit: {spec.label}: {timing[spec.label]['seconds']:.1f} s")

    def _trained_twin(self, spec, model_dir: Path) -> str | None:
        """A method of this run trained with the same settings except `uncertainty`, if one is saved."""
        if spec.kind != "mmgp":
            return None
        mine = {k: v for k, v in mmgp_settings(spec).items() if k != "uncertainty"}
        for other in self.case.methods:
            if other.kind == "mmgp" and other.label != spec.label and (model_dir / f"{other.label}.json").exists():
                theirs = {k: v for k, v in mmgp_settings(other).items() if k != "uncertainty"}
                if theirs == mine:
                    return other.label
        return None

    # ------------------------------------------------------------ evaluate
    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        torch.set_num_threads(1)
        case = self.case
        model_dir = self.run.path / "model"
        test = D.read_split(data, "test", case.data.n_test)
        ood = D.read_split(data, "ood", case.data.n_ood)
        timing = read_json(model_dir / "training.json")
        rows: list[dict[str, Any]] = []
        scalar_names = list(SCALAR_OUTPUTS)
        n_out = len(FIELDS) + len(scalar_names)
        pred_mean = np.full((len(case.methods), len(test), len(scalar_names)), np.nan)
        pred_std = np.full_like(pred_mean, np.nan)
        field_err = np.full((len(case.methods), len(test), len(FIELDS)), np.nan)
        fem_seconds = self._time_fem(test[: case.evaluate.cost_samples])
        for mi, spec in enumerate(case.methods):
            model = self.load_method(model_dir, spec.label)
            name = spec.label
            preds, t0 = [], time.perf_counter()
            with warnings.catch_warnings():  # distances to the training shapes are reported below instead
                warnings.simplefilter("ignore")
                for s in test:
                    preds.append(model.predict_arrays(s.nodes, s.triangles, s.inputs, s.shape_parameters))
            per_sample = (time.perf_counter() - t0) / len(test)
            errors = []
            for j, f in enumerate(FIELDS):
                refs = [s.fields[f] for s in test]
                means = [p["fields"][f][0] for p in preds]
                r = M.rrmse_field(refs, means)
                errors.append(r)
                rows += [metric_row(name, f"rrmse_{f}", r), metric_row(name, f"q2_{f}", M.q2(refs, means))]
                field_err[mi, :, j] = [M.rrmse_field([a], [b]) for a, b in zip(refs, means)]
                if preds[0]["fields"][f][1] is not None:
                    stds = [p["fields"][f][1] for p in preds]
                    for level in case.evaluate.coverage_levels:
                        rows.append(metric_row(name, f"coverage{round(100 * level)}_{f}",
                                               M.coverage(refs, means, stds, level)))
            for j, k in enumerate(scalar_names):
                ref = np.array([s.outputs[j] for s in test])
                mean = np.array([p["scalars"][k][0] for p in preds])
                pred_mean[mi, :, j] = mean
                r = M.rrmse_scalar(ref, mean)
                errors.append(r)
                rows += [metric_row(name, f"rrmse_{k}", r), metric_row(name, f"q2_{k}", M.q2([ref], [mean]))]
                if preds[0]["scalars"][k][1] is not None:
                    std = np.array([p["scalars"][k][1] for p in preds])
                    pred_std[mi, :, j] = std
                    for level in case.evaluate.coverage_levels:
                        rows.append(metric_row(name, f"coverage{round(100 * level)}_{k}",
                                               M.coverage(list(ref[:, None]), list(mean[:, None]),
                                                          list(std[:, None]), level)))
            rows.append(metric_row(name, "rrmse_mean", float(np.mean(errors)), outputs=n_out))
            rows.append(metric_row(name, "train_seconds", timing[name]["seconds"], unit="s"))
            rows.append(metric_row(name, "seconds_per_sample", per_sample, unit="s"))
            rows.append(metric_row(name, "speedup_vs_fem", fem_seconds / per_sample))
            if ood and spec.kind == "mmgp":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    po = [model.predict_arrays(s.nodes, s.triangles, s.inputs) for s in ood]
                rows.append(metric_row(name, "ood_rrmse_von_mises", M.rrmse_field(
                    [s.fields["von_mises"] for s in ood], [p["fields"]["von_mises"][0] for p in po])))
                s_test = np.mean([np.mean(p["fields"]["von_mises"][1]) for p in preds])
                s_ood = np.mean([np.mean(p["fields"]["von_mises"][1]) for p in po])
                rows.append(metric_row(name, "ood_std_ratio_von_mises", s_ood / s_test if s_test > 0 else np.nan))
                rows.append(metric_row(name, "ood_shape_distance", np.mean([p["shape_distance"] for p in po]),
                                       limit=po[0]["shape_distance_limit"]))
            self.log(f"evaluate: {name}: mean RRMSE {np.mean(errors):.4g}, {per_sample * 1e3:.0f} ms per new shape")
        rows.append(metric_row("fem", "seconds_per_sample", fem_seconds, unit="s"))
        ours = case.surrogate.label
        head = next(r for r in rows if r["method"] == ours and r["metric"] == "rrmse_mean")
        metrics = {"headline": {"method": ours, "metric": "rrmse_mean", "value": head["value"]}, "rows": rows,
                   "table_metrics": TABLE}
        methods = [m.label for m in case.methods]
        refs = np.array([s.outputs for s in test])
        ds = xr.Dataset(
            {"scalar_prediction": (("method", "sample", "output"), pred_mean,
                                   {"units": "1", "long_name": "predicted scalar output (units per output)",
                                    "surrogate_role": "prediction"}),
             "scalar_std": (("method", "sample", "output"), pred_std,
                            {"units": "1", "long_name": "predictive standard deviation of the scalar output",
                             "surrogate_role": "uncertainty"}),
             "scalar_reference": (("sample", "output"), refs,
                                  {"units": "1", "long_name": "FEM scalar output", "surrogate_role": "reference"}),
             "field_rrmse": (("method", "sample", "field"), field_err,
                             {"units": "1", "long_name": "per-sample relative RMSE of the field (PLAID)",
                              "surrogate_role": "error"})},
            coords={"method": ("method", methods, {"units": "1", "long_name": "method"}),
                    "sample": ("sample", [s.name for s in test], {"units": "1", "long_name": "test sample"}),
                    "output": ("output", scalar_names, {"units": "1", "long_name": "scalar output",
                               "output_units": " ".join(u for u, _ in SCALAR_OUTPUTS.values())}),
                    "field": ("field", list(FIELDS), {"units": "1", "long_name": "field"})},
            attrs={"title": f"mmgp evaluation of case {case.name}", "surrogate_family": "mmgp"})
        return metrics, ds

    def _time_fem(self, samples: list) -> float:
        """Seconds per hyperelastic solve of known meshes, timed here beside the surrogate (meshing excluded)."""
        p = self.case.physics
        t0 = time.perf_counter()
        for s in samples:
            solve_specimen(s.nodes, s.triangles, *s.inputs, p.poisson, p.model, p.load_steps, p.newton_tol)
        return (time.perf_counter() - t0) / len(samples)

    # -------------------------------------------------------------- report
    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = self.run.sub("figures")
        model = self.load_method(self.run.path / "model", self.case.surrogate.label)
        for s in D.read_split(data, "test", self.case.evaluate.figures):
            with warnings.catch_warnings():  # far-away shapes are reported by evaluate, not here
                warnings.simplefilter("ignore")
                p = model.predict_arrays(s.nodes, s.triangles, s.inputs)
            mean, std = p["fields"]["von_mises"]
            title = f"{s.name}: load {s.inputs[0]:.1f} MPa, shear {s.inputs[1]:.2f} MPa, E {s.inputs[2]:.0f} MPa"
            used = field_panels(s.nodes, s.triangles, s.fields["von_mises"], mean, std, title, "MPa",
                                figs / f"von_mises_{s.name}.png")
            self.log(f"report: von_mises_{s.name}.png drawn with {used}")
        fig, axes = plt.subplots(1, len(predictions.output), figsize=(4 * len(predictions.output), 3.8))
        for ax, out in zip(np.atleast_1d(axes), predictions.output.values):
            ref = predictions.scalar_reference.sel(output=out).values
            for m in predictions.method.values:
                pred = predictions.scalar_prediction.sel({"method": m, "output": out}).values
                ax.plot(ref, pred, ".", ms=3, label=str(m))
            ax.plot([ref.min(), ref.max()], [ref.min(), ref.max()], "k-", lw=0.8)
            ax.set(xlabel=f"FEM {out}", ylabel="predicted", title=str(out))
        np.atleast_1d(axes)[0].legend(fontsize=7)
        save_figure(fig, figs / "scalars_parity.png")

    # ----------------------------------------------------------------- load
    @staticmethod
    def load_method(model_dir: Path, name: str):
        kind = read_json(model_dir / f"{name}.json")["kind"]
        return GNNSurrogate.load(model_dir, name) if kind == "gnn" else MMGP.load(model_dir, name)

    @classmethod
    def load(cls, run: RunFolder, device: str = "cpu", method: str | None = None):
        model_dir = run.path / "model"
        return cls.load_method(model_dir, method_name(model_dir, method))


TABLE = ["rrmse_mean", "rrmse_u1", "rrmse_u2", "rrmse_von_mises", "rrmse_von_mises_p995", "rrmse_top_displacement",
         "rrmse_compliance", "coverage95_von_mises", "coverage95_von_mises_p995", "train_seconds", "speedup_vs_fem"]


def reuse_samples(out: Path, cfg: dict[str, Any], log) -> None:
    """Hard-link samples of the same configuration from sibling caches that differ only in the counts:
    a sample depends only on (seed, split, index), so a smaller dataset is part of a larger one."""
    same = {k: v for k, v in json.loads(json.dumps(cfg)).items() if k != "counts"}  # tuples read back as lists
    linked = 0
    for other in out.parent.iterdir():
        conf = other / "config.json"
        if other == out or not conf.exists():
            continue
        if {k: v for k, v in read_json(conf).items() if k != "counts"} != same:
            continue
        for split, n in cfg["counts"].items():
            for i in range(n):
                for suffix in (".vtu", ".nc"):  # the .nc last: its presence marks a finished sample
                    src, dst = other / f"{D.sample_name(split, i)}{suffix}", out / f"{D.sample_name(split, i)}{suffix}"
                    if src.exists() and not dst.exists():
                        os.link(src, dst)
                        linked += suffix == ".nc"
                    zarr_src, zarr_dst = src.with_suffix(".zarr"), dst.with_suffix(".zarr")
                    if suffix == ".nc" and zarr_src.exists() and not zarr_dst.exists():
                        shutil.copytree(zarr_src, zarr_dst, copy_function=os.link)
                        linked += 1
    if linked:
        log(f"data: {linked} samples linked from caches of the same configuration")


def mmgp_settings(spec) -> dict[str, Any]:
    return spec.model_dump(exclude={"kind", "name"})

"""The PROSE pipeline: ODE data -> fused and data-only models -> trajectories, equations, baselines.

Every method sees exactly the same points: every ``input_step``-th noisy state on [0, 2]. The
equation baselines (nominal, pysindy, decoded) integrate from the last of these points.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core.executor import map_tasks
from surrogate.core.methods import method_name, write_index
from surrogate.core.report import metric_row, save_figure
from surrogate.core.runner import Pipeline, peak_memory_mib
from surrogate.core.store import RunFolder, read_json, read_netcdf, write_json
from surrogate.prose import baselines as B
from surrogate.prose.data import make_dataset_task, write_dataset
from surrogate.prose.model import ProseConfig, ProseModel, count_parameters
from surrogate.prose.odes import FAMILIES, add_noise
from surrogate.prose.predictor import ProseSurrogate, decode_systems, skeleton_matches
from surrogate.prose.refine import forecast, refine_systems
from surrogate.prose.schema import ProseCase
from surrogate.prose.symbols import VOCABULARY, corrupt, to_sympy, to_tokens
from surrogate.prose.symbols import assemble as assemble_terms
from surrogate.prose.training import Arrays, arrays_from, no_skeleton, train_prose

FUSED, DATA_ONLY = "prose", "prose_data_only"
REFINED = "prose_refined"  # the decoded equations with their numbers re-fitted to the observed points, forecast
# from the state fitted to them
WINDOWS = {"2-4": (2.0, 4.0), "4-6": (4.0, 6.0), "2-6": (2.0, 6.0)}
TABLE = ["rel_l2_clean_2-4_median", "rel_l2_clean_4-6_median", "rel_l2_noisy_2-4_median", "rel_l2_clean_2-6_mean",
         "valid_fraction", "rhs_rel_l2_median", "skeleton_match", "diverged_fraction"]


def per_sample_rel_l2(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """||pred - ref|| / ||ref|| per sample over times and components; a non-finite prediction counts as 0."""
    pred = np.nan_to_num(pred, nan=0.0, posinf=0.0, neginf=0.0)
    return np.linalg.norm((pred - ref).reshape(len(ref), -1), axis=1) / np.linalg.norm(ref.reshape(len(ref), -1),
                                                                                      axis=1)


def rhs_rel_l2(pred: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative L2 of the right-hand side per sample over its points; NaN predictions give inf."""
    err = np.linalg.norm((pred - ref).reshape(len(ref), -1), axis=1) / np.linalg.norm(ref.reshape(len(ref), -1),
                                                                                     axis=1)
    return np.where(np.isfinite(err), err, np.inf)


class ProsePipeline(Pipeline):
    Case = ProseCase
    family = "prose"

    @classmethod
    def data_config(cls, case: ProseCase) -> dict[str, Any]:
        d = case.data
        keys = ("families", "n_train", "n_test", "n_initial_train", "n_initial_test", "noise_level", "spread",
                "ood_spread", "corruption", "p_add", "p_delete")
        return {"format": 1, "seed": case.seed, **{k: getattr(d, k) for k in keys}}

    @classmethod
    def batch_sizes(cls, case: ProseCase) -> dict[str, int]:
        return {"train.batch_size": case.train.batch_size}

    def generate_data(self, out: Path) -> None:
        d = self.case.data
        p_add, p_delete = (d.p_add, d.p_delete) if d.corruption else (0.0, 0.0)
        common = dict(families=d.families, n_train=d.n_train, n_test=d.n_test, n_initial_train=d.n_initial_train,
                      n_initial_test=d.n_initial_test, noise_level=d.noise_level, spread=d.spread, p_add=p_add,
                      p_delete=p_delete, seed=self.case.seed)
        # two solver tasks: the train/test equations and the out-of-range test equations
        tasks = {"in_distribution": common, "ood": {**common, "test_spread": d.ood_spread}}
        todo = [k for k, done in (("in_distribution", "test.nc"), ("ood", "ood.nc")) if not (out / done).exists()]

        def write(i: int, ds) -> None:
            if todo[i] == "ood":
                write_dataset(ds.isel(sample=ds["split"].values == 1), out / "ood.nc")
            else:
                write_dataset(ds.isel(sample=ds["split"].values == 0), out / "train.nc")
                write_dataset(ds.isel(sample=ds["split"].values == 1), out / "test.nc")

        map_tasks(make_dataset_task, [tasks[k] for k in todo], todo, write, self.case.executor, self.case.workers,
                  log=self.log)

    # ----------------------------------------------------------------- fit
    def _methods(self) -> list[str]:
        methods = [FUSED if self.case.surrogate.symbols else DATA_ONLY]
        if "data_only" in self.case.evaluate.baselines and self.case.surrogate.symbols:
            methods.append(DATA_ONLY)
        return methods

    def fit(self, data: Path) -> None:
        case = self.case
        model_dir = self.run.sub("model")
        hist_file = model_dir / "training.json"
        history = read_json(hist_file) if hist_file.exists() else {}
        train = read_netcdf(data / "train.nc")
        names = train.attrs["families"].split()
        held = [names.index(f) for f in case.data.held_out]
        rows = np.flatnonzero(~np.isin(train["family"].values, held))
        arrays = arrays_from(train, case.data.input_step, rows)
        u_scale = float(arrays.u.std())
        methods = self._methods()
        write_index(model_dir, methods[0], methods)
        for name in methods:
            if (model_dir / f"{name}.json").exists():
                continue
            symbols = name == FUSED
            spec = case.surrogate
            cfg = ProseConfig(width=spec.width, heads=spec.heads, ffn=spec.ffn, data_layers=spec.data_layers,
                              symbol_encoder_layers=spec.symbol_encoder_layers, fusion_layers=spec.fusion_layers,
                              operator_layers=spec.operator_layers, symbol_decoder_layers=spec.symbol_decoder_layers,
                              symbols=symbols, max_len=spec.max_len, u_scale=u_scale,
                              time_features=spec.time_features)
            torch.manual_seed(case.seed * 7919 + len(name))
            model = ProseModel(cfg)
            steps = case.train.steps if symbols else (case.train.data_only_steps or case.train.steps)
            self.log(f"fit: {name}: {count_parameters(model) / 1e6:.2f}M parameters, {steps} steps of "
                     f"{case.train.batch_size} from {len(arrays)} trajectories")
            hist = train_prose(model, arrays, case.train, steps, case.data.noise_level,
                               self.run.sub("checkpoints") / f"{name}.pt", case.seed, self.device, self.log,
                               f"train {name}")
            hist["parameters"] = count_parameters(model)
            hist["steps"] = steps
            hist["batch_size"] = case.train.batch_size
            meta = {"case": case.name, "method": name, "n_input": case.data.n_input,
                    "input_step": case.data.input_step, "families_trained": [n for n in names
                                                                             if n not in case.data.held_out],
                    "inputs": {"t_obs": {"shape": "(N,)", "units": "1", "long_name": "observation times"},
                               "u_obs": {"shape": "(N, 3) or (B, N, 3)", "units": "1", "long_name": "observed state"},
                               "t_query": {"shape": "(Q,)", "units": "1", "long_name": "query times"}},
                    "outputs": {"u_query": {"shape": "(Q, 3) or (B, Q, 3)", "units": "1",
                                            "long_name": "predicted state"},
                                "equations": {"long_name": "decoded right-hand sides (sympy), fused model only"}}}
            ProseSurrogate(model, meta).save(model_dir, name)
            history[name] = hist
            write_json(hist_file, history)

    # ------------------------------------------------------------ evaluate
    def _run_model(self, sur: ProseSurrogate, a: Arrays, u_in: np.ndarray, skeleton: torch.Tensor | None,
                   decode: bool) -> tuple[np.ndarray, list | None]:
        """Predict all output times (and decode) in batches."""
        model = sur.model_.to(self.device)
        bs = self.case.evaluate.batch_size
        preds, systems = [], []
        with torch.no_grad():
            for s in range(0, len(a), bs):
                n = min(bs, len(a) - s)
                t_in = a.times[a.obs].expand(n, -1).to(self.device)
                u = torch.tensor(u_in[s:s + n][:, a.obs.numpy()], dtype=torch.float32, device=self.device)
                ids = None if skeleton is None else skeleton[s:s + n].to(self.device)
                ids = ids[:, : max(1, int((ids != VOCABULARY.pad_id).sum(1).max()))] if ids is not None else None
                data, text, text_pad = model.encode(t_in, u, ids)
                preds.append(model.operate(data, a.times[a.out].expand(n, -1).to(self.device)).cpu().numpy())
                if decode and text is not None:
                    systems += decode_systems(model.decode(text, text_pad).cpu().numpy())
        model.to("cpu")
        return np.concatenate(preds).astype(float), (systems if decode else None)

    def _skeletons(self, ds: xr.Dataset, a: Arrays, mode: str, seed: int) -> torch.Tensor:
        """Symbol inputs: 'stored' (the data's draw), 'clean', 'corrupted' (every one), 'none'."""
        if mode == "stored":
            return a.skeleton
        if mode == "none":
            return no_skeleton(len(a))
        names = ds.attrs["families"].split()
        rng = np.random.default_rng(seed)
        seqs = []
        for code in a.family:
            terms = FAMILIES[names[code]].skeleton_terms
            if mode == "corrupted":
                _, terms = corrupt(terms, rng, 0.5, 0.5)
            seqs.append(VOCABULARY.encode(to_tokens(assemble_terms(terms))))
        out = np.full((len(seqs), max(map(len, seqs))), VOCABULARY.pad_id, dtype=np.int64)
        for i, s in enumerate(seqs):
            out[i, :len(s)] = s
        return torch.tensor(out)

    def _trajectory_rows(self, method: str, pred: np.ndarray, a: Arrays, ref_noisy: np.ndarray,
                         families: list[str], suffix: str = "", per_family: bool = True,
                         held: list[int] | None = None) -> tuple[list[dict], dict[str, np.ndarray]]:
        t_out = a.times[a.out].numpy()
        clean = a.u[:, a.out].numpy().astype(float)
        rows, per = [], {}
        for ref_name, ref in (("clean", clean), ("noisy", ref_noisy[:, a.out.numpy()])):
            for w, (lo, hi) in WINDOWS.items():
                mask = (t_out > lo) & (t_out <= hi + 1e-9)
                err = per_sample_rel_l2(pred[:, mask], ref[:, mask])
                per[f"{ref_name}_{w}"] = err
                key = f"rel_l2_{ref_name}_{w}"
                rows += [metric_row(method, f"{key}_median{suffix}", np.median(err)),
                         metric_row(method, f"{key}_mean{suffix}", np.mean(err))]
                if ref_name == "clean" and w == "2-6":
                    rows.append(metric_row(method, f"{key}_p90{suffix}", np.percentile(err, 90)))
                if per_family and w != "2-6":
                    for code, fam in enumerate(families):
                        sel = a.family == code
                        if sel.any():
                            rows.append(metric_row(method, f"{key}_median{suffix}_{fam}", np.median(err[sel])))
                if held and w == "2-4":
                    sel = np.isin(a.family, held)
                    rows.append(metric_row(method, f"{key}_median{suffix}_held_out", np.median(err[sel])))
        diverged = ~np.all(np.isfinite(pred), axis=(1, 2))
        rows.append(metric_row(method, f"diverged_fraction{suffix}", diverged.mean()))
        return rows, per

    def _symbol_rows(self, method: str, systems: list, truth: list, points: np.ndarray, true_rhs: np.ndarray,
                     suffix: str = "") -> tuple[list[dict], np.ndarray]:
        valid = np.array([s is not None for s in systems])
        rhs = np.full(len(systems), np.inf)
        if valid.any():
            idx = np.flatnonzero(valid)
            pred = B.systems_rhs([systems[i] for i in idx], points[idx])
            rhs[idx] = rhs_rel_l2(pred, true_rhs[idx])
        rows = [metric_row(method, f"valid_fraction{suffix}", valid.mean()),
                metric_row(method, f"rhs_rel_l2_median{suffix}", np.median(rhs)),
                metric_row(method, f"rhs_below_1pct{suffix}", np.mean(rhs < 0.01)),
                metric_row(method, f"rhs_below_5pct{suffix}", np.mean(rhs < 0.05)),
                metric_row(method, f"skeleton_match{suffix}", skeleton_matches(systems, truth).mean())]
        return rows, rhs

    def _set(self, ds: xr.Dataset) -> dict[str, Any]:
        """Everything about one test set the methods share: arrays, truths, RHS points, start states."""
        a = arrays_from(ds, self.case.data.input_step)
        names = ds.attrs["families"].split()
        fams = [FAMILIES[names[c]] for c in a.family]
        params = [ds["parameters"].values[i, :len(f.nominal)] for i, f in enumerate(fams)]
        truth = [f.equation(p) for f, p in zip(fams, params)]
        rng = np.random.default_rng([self.case.seed, 50])
        points = rng.uniform(-5, 5, size=(len(a), self.case.evaluate.rhs_points, 3))
        true_rhs = np.stack([f.vector_field(x, p) for f, x, p in zip(fams, points, params)])
        return {"ds": ds, "a": a, "names": names, "fams": fams, "truth": truth, "points": points,
                "true_rhs": true_rhs, "u_noisy": ds["u_noisy"].values.astype(float)}

    def _equation_baselines(self, s: dict, u_noisy: np.ndarray, systems: list | None, suffix: str,
                            which: list[str]) -> tuple[list[dict], dict[str, np.ndarray]]:
        """nominal / pysindy / decoded trajectories from the last observed point."""
        a, ev = s["a"], self.case.evaluate
        start = int(a.obs[-1])
        grid = a.times.numpy()[start:].astype(float)
        u0 = u_noisy[:, start]
        cut = a.out.numpy() - start
        preds, rows = {}, []
        if "nominal" in which:
            pred = np.full((len(a), len(grid), 3), np.nan)
            for code in np.unique(a.family):
                sel = a.family == code
                pred[sel] = B.nominal(s["fams"][np.flatnonzero(sel)[0]], u0[sel], grid)
            preds["nominal"] = pred[:, cut]
            nominal_rhs = np.stack([f.vector_field(x) for f, x in zip(s["fams"], s["points"])])
            rows.append(metric_row("nominal", f"rhs_rel_l2_median{suffix}",
                                   np.median(rhs_rel_l2(nominal_rhs, s["true_rhs"]))))
            rows += self._rhs_family_rows("nominal", rhs_rel_l2(nominal_rhs, s["true_rhs"]), s, suffix)
        if "pysindy" in which:
            t_obs = a.times[a.obs].numpy().astype(float)
            sindy = B.SindyFits(ev.sindy_degree, ev.sindy_threshold).fit(t_obs, u_noisy[:, a.obs.numpy()])
            preds["pysindy"] = sindy.integrate(u0, grid)[:, cut]
            rows.append(metric_row("pysindy", f"rhs_rel_l2_median{suffix}",
                                   np.median(rhs_rel_l2(sindy.rhs(s["points"]), s["true_rhs"]))))
            rows += self._rhs_family_rows("pysindy", rhs_rel_l2(sindy.rhs(s["points"]), s["true_rhs"]), s, suffix)
        if "decoded" in which and systems is not None:
            preds["prose_decoded"] = B.integrate_systems(systems, u0, grid)[:, cut]
            r, decoded_rhs = self._symbol_rows("prose_decoded", systems, s["truth"], s["points"], s["true_rhs"], suffix)
            rows += r + self._rhs_family_rows("prose_decoded", decoded_rhs, s, suffix)
            r, refined = self._refined(s, u_noisy, systems, grid, suffix)
            rows += r
            preds[REFINED] = refined[:, cut]
        return rows, preds

    def _refined(self, s: dict, u_noisy: np.ndarray, systems: list, grid: np.ndarray,
                 suffix: str) -> tuple[list[dict], np.ndarray]:
        """Decoded equations with numbers re-fitted to the observed points: symbol rows, cost, trajectory."""
        a = s["a"]
        t_obs, u_obs = a.times[a.obs].numpy().astype(float), u_noisy[:, a.obs.numpy()]
        started = time.perf_counter()
        refined = refine_systems(systems, t_obs, u_obs)
        ms = 1e3 * (time.perf_counter() - started) / max(1, sum(q is not None for q in systems))
        rows, rhs = self._symbol_rows(REFINED, refined, s["truth"], s["points"], s["true_rhs"], suffix)
        rows += self._rhs_family_rows(REFINED, rhs, s, suffix)
        rows.append(metric_row(REFINED, f"refine_ms_per_trajectory{suffix}", ms, unit="ms",
                               note="coefficient refinement of one decoded system, all test systems in one call, CPU"))
        # from the state that best fits all observed points, not the noisy last one
        return rows, forecast(refined, t_obs, u_obs, grid)

    def _rhs_family_rows(self, method: str, rhs: np.ndarray, s: dict, suffix: str) -> list[dict]:
        """Median right-hand-side error per family (main test set only)."""
        if suffix:
            return []
        a = s["a"]
        return [metric_row(method, f"rhs_rel_l2_median_{fam}", np.median(rhs[a.family == code]))
                for code, fam in enumerate(s["names"]) if np.any(a.family == code)]

    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        case, ev = self.case, self.case.evaluate
        model_dir = self.run.path / "model"
        methods = self._methods()
        models = {m: ProseSurrogate.load(model_dir, m) for m in methods}
        fused = FUSED in models
        main = self._set(read_netcdf(data / "test.nc"))
        a, names = main["a"], main["names"]
        held = [names.index(f) for f in case.data.held_out]
        rows: list[dict] = []
        errors: dict[str, dict[str, np.ndarray]] = {}
        preds: dict[str, np.ndarray] = {}
        systems = None
        for name, sur in models.items():
            pred, decoded = self._run_model(sur, a, main["u_noisy"], a.skeleton if sur.model_.cfg.symbols else None,
                                            decode=sur.model_.cfg.symbols)
            preds[name] = pred
            if decoded is not None:
                systems = decoded
                r, rhs = self._symbol_rows(name, decoded, main["truth"], main["points"], main["true_rhs"])
                rows += r
        r, eq_preds = self._equation_baselines(main, main["u_noisy"], systems, "", ev.baselines)
        rows += r
        preds.update(eq_preds)
        for name, pred in preds.items():
            r, errors[name] = self._trajectory_rows(name, pred, a, main["u_noisy"], names, held=held)
            rows += r
        d = main["ds"]["nearest_train_distance"].values
        rows += [metric_row("data", "test_train_distance_median", np.median(d)),
                 metric_row("data", "test_train_distance_max", np.max(d))]

        # variations on the same models: input noise, symbol input, out-of-distribution parameters
        rng = np.random.default_rng([case.seed, 60])
        clean = main["ds"]["u"].values.astype(float)
        for level in ev.noise_levels:
            noisy = add_noise(clean, level, rng)
            for name, sur in models.items():
                symbols = sur.model_.cfg.symbols
                pred, dec = self._run_model(sur, a, noisy, a.skeleton if symbols else None, decode=symbols)
                rows += self._trajectory_rows(name, pred, a, noisy, names, f"_noise{level:g}", per_family=False)[0]
                if dec is not None:
                    rows += self._symbol_rows(name, dec, main["truth"], main["points"], main["true_rhs"],
                                              f"_noise{level:g}")[0]
            which = [b for b in ("pysindy", "nominal") if b in ev.baselines]
            r, eq = self._equation_baselines(main, noisy, None, f"_noise{level:g}", which)
            rows += r
            for name, pred in eq.items():
                rows += self._trajectory_rows(name, pred, a, noisy, names, f"_noise{level:g}", per_family=False)[0]
        if fused:
            for mode in ("clean", "corrupted", "none"):
                sk = self._skeletons(main["ds"], a, mode, case.seed + 70)
                pred, dec = self._run_model(models[FUSED], a, main["u_noisy"], sk, decode=True)
                rows += self._trajectory_rows(FUSED, pred, a, main["u_noisy"], names, f"_skeleton_{mode}",
                                              per_family=False)[0]
                rows += self._symbol_rows(FUSED, dec, main["truth"], main["points"], main["true_rhs"],
                                          f"_skeleton_{mode}")[0]
        ood = self._set(read_netcdf(data / "ood.nc"))
        ood_systems = None
        for name, sur in models.items():
            symbols = sur.model_.cfg.symbols
            pred, dec = self._run_model(sur, ood["a"], ood["u_noisy"], ood["a"].skeleton if symbols else None,
                                        decode=symbols)
            rows += self._trajectory_rows(name, pred, ood["a"], ood["u_noisy"], names, "_ood", per_family=False)[0]
            if dec is not None:
                ood_systems = dec
                rows += self._symbol_rows(name, dec, ood["truth"], ood["points"], ood["true_rhs"], "_ood")[0]
        r, eq = self._equation_baselines(ood, ood["u_noisy"], ood_systems, "_ood", ev.baselines)
        rows += r
        for name, pred in eq.items():
            rows += self._trajectory_rows(name, pred, ood["a"], ood["u_noisy"], names, "_ood", per_family=False)[0]
        d = ood["ds"]["nearest_train_distance"].values
        rows.append(metric_row("data", "test_train_distance_median_ood", np.median(d)))

        rows += self._costs(models, a, main["u_noisy"])
        ours = methods[0]
        head = next((r for r in rows if r["method"] == ours and r["metric"] == ev.headline), None)
        metrics = {"surrogate": ours, "methods": list(preds), "table_metrics": TABLE,
                   "headline": {k: head[k] for k in ("method", "metric", "value")} if head else {}, "rows": rows}
        return metrics, self._predictions(main, preds, errors, systems)

    def _costs(self, models: dict[str, ProseSurrogate], a: Arrays, u_noisy: np.ndarray) -> list[dict]:
        rows = []
        history = read_json(self.run.path / "model" / "training.json")
        for name, h in history.items():
            rows += [metric_row(name, "train_seconds", h["seconds"], unit="s"),
                     metric_row(name, "parameters", h["parameters"]),
                     metric_row(name, "train_steps", h["steps"])]
        t_obs = a.times[a.obs].numpy().astype(float)
        t_q = a.times[a.out].numpy().astype(float)
        # spread over the test set (it is ordered by family, and equations differ in length by family)
        picks = np.linspace(0, len(a) - 1, min(24, len(a))).astype(int)
        n = len(picks)
        for name, sur in models.items():
            sur.model_.to("cpu")
            # the fused model reads the test set's skeleton, as in the evaluation
            skeletons = [(VOCABULARY.decode(a.skeleton[i]) or None) if sur.model_.cfg.symbols else None
                         for i in picks]
            paths = [(name, {}, "decoding included")]
            if sur.model_.cfg.symbols:
                paths.append((REFINED, {"refine": True, "trajectory": "equation"},
                              "decoding, refinement and the refined equation's forecast"))
            for method, options, what in paths:
                sur.predict(t_obs, u_noisy[0, a.obs.numpy()], t_q, skeletons[0], **options)  # warm-up
                started = time.perf_counter()
                for i, skeleton in zip(picks, skeletons):
                    sur.predict(t_obs, u_noisy[i, a.obs.numpy()], t_q, skeleton, **options)
                rows.append(metric_row(method, "inference_ms_per_trajectory",
                                       1e3 * (time.perf_counter() - started) / n, unit="ms",
                                       note=f"one trajectory per call, 128 query times, {what}, {n} trajectories "
                                       "spread over the test set, CPU"))
            model, obs = sur.model_, a.obs.numpy()
            with torch.no_grad():
                started = time.perf_counter()
                for i in picks:
                    t_in = torch.tensor(t_obs[None], dtype=torch.float32)
                    u_in = torch.tensor(u_noisy[i:i + 1, obs], dtype=torch.float32)
                    ids = a.skeleton[i:i + 1] if model.cfg.symbols else None
                    data, _, _ = model.encode(t_in, u_in, ids)
                    model.operate(data, torch.tensor(t_q[None], dtype=torch.float32))
            rows.append(metric_row(name, "operator_ms_per_trajectory", 1e3 * (time.perf_counter() - started) / n,
                                   unit="ms", note="trajectory only (no decoding), one per call, CPU"))
        rows.append(metric_row("run", "peak_memory_mib", peak_memory_mib(), unit="MiB"))
        return rows

    def _predictions(self, s: dict, preds: dict[str, np.ndarray], errors: dict, systems: list | None) -> xr.Dataset:
        a, names = s["a"], list(preds)
        one = lambda long_name: {"units": "1", "long_name": long_name}  # noqa: E731
        equations = [("" if q is None else "; ".join(str(e) for e in to_sympy(q))) for q in (systems or [])]
        data = {
            "u_prediction": (("method", "sample", "time", "component"), np.stack([preds[n] for n in names]),
                             {**one("predicted state"), "surrogate_role": "prediction"}),
            "u_reference": (("sample", "time", "component"), a.u[:, a.out].numpy(),
                            {**one("clean state"), "surrogate_role": "reference"}),
            "u_noisy": (("sample", "time", "component"), s["u_noisy"][:, a.out.numpy()], one("noisy state")),
            "u_observed": (("sample", "observed_time", "component"), s["u_noisy"][:, a.obs.numpy()],
                           one("observed noisy state (model input)")),
            "rel_l2_clean": (("method", "sample", "window"), np.stack([np.stack([errors[n][f"clean_{w}"]
                                                                                 for w in WINDOWS], -1)
                                                                       for n in names]),
                             one("per-sample relative L2 error against the clean state")),
            "family": ("sample", a.family.astype(np.int16), {**one("ODE family"),
                                                             "flag_meanings": " ".join(s["names"])}),
        }
        if systems is not None:
            data["decoded_equation"] = ("sample", np.array(equations, dtype=object),
                                        one("decoded right-hand sides u_0' ; u_1' ; u_2' (empty: invalid)"))
        coords = {
            "method": ("method", names, one("method")),
            "time": ("time", a.times[a.out].numpy(), one("query time")),
            "observed_time": ("observed_time", a.times[a.obs].numpy(), one("observation time")),
            "component": ("component", ["u_0", "u_1", "u_2"], one("state component")),
            "window": ("window", list(WINDOWS), one("time window")),
            "sample": ("sample", np.arange(len(a)), one("test trajectory")),
        }
        return xr.Dataset(data, coords, attrs={"title": f"PROSE evaluation of case {self.case.name}",
                                               "surrogate_case": self.case.name, "surrogate_family": "prose"})

    # --------------------------------------------------------------- report
    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        p = predictions
        figs = self.run.sub("figures")
        fams = p["family"].attrs["flag_meanings"].split()
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
        for ax, code in zip(axes, range(min(3, len(fams)))):
            i = int(np.flatnonzero(p["family"].values == code)[0])
            ax.plot(p.observed_time, p.u_observed[i, :, 0], "k.", ms=3, label="observed")
            ax.plot(p.time, p.u_reference[i, :, 0], "k", lw=2, label="truth")
            for m in p.method.values:
                ax.plot(p.time, p.u_prediction.sel({"method": m})[i, :, 0], lw=1, label=str(m))
            ax.set(title=fams[code], xlabel="t", ylabel="u_0")
        axes[0].legend(fontsize=7)
        save_figure(fig, figs / "trajectories.png")
        fig, ax = plt.subplots(figsize=(8, 3.6))
        width = 0.8 / len(p.method)
        for k, m in enumerate(p.method.values):
            err = p.rel_l2_clean.sel({"method": m, "window": "2-4"}).values
            med = [np.median(err[p["family"].values == c]) for c in range(len(fams))]
            ax.bar(np.arange(len(fams)) + k * width, med, width, label=str(m))
        ax.set_xticks(np.arange(len(fams)) + 0.4, fams, rotation=40, ha="right", fontsize=8)
        ax.set(yscale="log", ylabel="median rel. L2 on (2, 4]", title="Trajectory error per family (clean targets)")
        ax.legend(fontsize=7)
        save_figure(fig, figs / "error_per_family.png")

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, run: RunFolder, device: str = "cpu", method: str | None = None) -> ProseSurrogate:
        model_dir = run.path / "model"
        return ProseSurrogate.load(model_dir, method_name(model_dir, method), device)

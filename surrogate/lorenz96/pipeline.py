"""The lorenz96 pipeline: truth data -> closures and baselines -> forecasts, climate, transfer, cost."""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core import distributed
from surrogate.core import metrics as M
from surrogate.core.case import stable_hash
from surrogate.core.methods import method_name, write_index
from surrogate.core.report import save_figure
from surrogate.core.runner import Pipeline
from surrogate.core.store import RunFolder, load_weights, read_data, read_json, write_json
from surrogate.lorenz96 import data as truth_data
from surrogate.lorenz96 import evaluation as E
from surrogate.lorenz96.closures import build
from surrogate.lorenz96.hybrid import HybridModel, load_state
from surrogate.lorenz96.schema import Lorenz96Case
from surrogate.lorenz96.training import train_offline, train_rollout

TABLE = ["closure_rmse", "forecast_rmse_0.5mtu", "forecast_rmse_1mtu", "forecast_rmse_2mtu", "mean_rmse_1mtu",
         "acc_1mtu", "bounded_fraction", "hellinger", "acf_rmse"]
OFFLINE_KEYS = ("epochs", "lr", "batch_size", "scheduler", "batching", "step_size", "gamma", "weight_decay")


class Lorenz96Pipeline(Pipeline):
    Case = Lorenz96Case
    family = "lorenz96"

    @classmethod
    def data_config(cls, case: Lorenz96Case) -> dict[str, Any]:
        # format 5: starts that blow up are drawn again (a format-4 cache may hold NaN trajectories)
        return {"format": 5, "seed": case.seed, "solver": case.solver.model_dump(),
                "data": case.data.model_dump(), "target": case.coarse.target}

    @classmethod
    def batch_sizes(cls, case: Lorenz96Case) -> dict[str, int]:
        sizes = {}
        for m in case.methods:
            cfg = case.train_for(m)
            sizes[f"{m.label}: train.batch_size"] = cfg.batch_size
            sizes[f"{m.label}: train.rollout_batch_size"] = cfg.rollout_batch_size
        return sizes

    def generate_data(self, out: Path) -> None:
        truth_data.generate(self.case, out, self.log)

    # ----------------------------------------------------------------- fit
    def _model(self, spec, K: int | None = None) -> HybridModel:
        case = self.case
        meta = {"case": case.name, "method": spec.label, "K_trained": K or case.solver.K,
                "inputs": {"X": {"shape": "(..., K)", "units": "1", "long_name": "slow variables X_k"}},
                "outputs": {"closure": {"shape": "(..., K)", "units": "1",
                                        "long_name": f"closure tendency ({case.coarse.target})"}},
                "solver": case.solver.model_dump(), "coarse": case.coarse.model_dump()}
        args = spec.init_args()
        if spec.kind in ("mno", "mno_memory", "pure_fno"):
            args["ring_size"] = K or case.solver.K  # so that the operator runs at other K (see RingFNO)
        return HybridModel(build(spec.kind, args), case.solver.F, case.coarse_dt, case.coarse.scheme, meta)

    def _train_one(self, spec, name: str, X, target, model_dir: Path, history: dict, K: int | None = None,
                   rollout: bool = True) -> None:
        cfg = self.case.train_for(spec)
        if K is not None:  # same number of sites per batch as at the case's K, so as many gradient steps
            size = max(8, round(cfg.batch_size * self.case.solver.K / K))
            cfg = cfg.model_copy(update={"batch_size": size - size % distributed.world_size()})
        ckpt = self.run.sub("checkpoints")
        # each method draws its initial weights from its own seed, so a resumed run that skips
        # finished methods builds the remaining ones exactly as an uninterrupted run would
        torch.manual_seed(self.case.seed * 1_000_003 + zlib.crc32(name.encode()))
        model = self._model(spec, K)
        offline_key = stable_hash([spec.kind, spec.init_args(), {k: getattr(cfg, k) for k in OFFLINE_KEYS}, K])
        twin = next((n for n, h in history.items() if h.get("offline_key") == offline_key
                     and (model_dir / f"{n}.offline.json").exists()), None)
        if twin is not None:  # the same offline training already ran in this run: reuse it
            self.log(f"fit: {name}: offline stage shared with {twin}")
            load_state(model.method, load_weights(model_dir / f"{twin}.offline.pt"))
            offline = history[twin]["offline"]
        else:
            offline = train_offline(model, X, target, cfg, ckpt / f"{name}.offline.pt", self.case.seed, self.device,
                                    f"train {name}")
        uses_rollout = rollout and model.method.trainable and cfg.rollout_steps > 0 and cfg.rollout_epochs > 0
        if model.method.trainable:
            model.save(model_dir, f"{name}.offline")
        fine = train_rollout(model, X, cfg, ckpt / f"{name}.rollout.pt", self.case.seed, self.device,
                             f"rollout {name}") if uses_rollout else []
        model.to("cpu").save(model_dir, name)
        history[name] = {"offline": offline, "rollout": fine, "offline_key": offline_key}
        last = f"offline loss {offline[-1]:.4g}" if offline else "closed form"
        self.log(f"fit: {name}: {last}" + (f", rollout loss {fine[-1]:.4g}" if fine else ""))

    def fit(self, data: Path) -> None:
        case = self.case
        model_dir = self.run.sub("model")
        hist_file = model_dir / "training.json"
        history = read_json(hist_file) if hist_file.exists() else {}
        train = read_data(data / "train.nc")
        X, target = train["X"].values, train["target"].values
        names = [m.label for m in case.methods]
        write_index(model_dir, case.surrogate.label, names)
        for spec in case.methods:
            if not (model_dir / f"{spec.label}.json").exists():
                self._train_one(spec, spec.label, X, target, model_dir, history)
                write_json(hist_file, history)
        for K in case.data.transfer_K:
            name = f"{case.surrogate.label}_retrained_K{K}"
            if not (model_dir / f"{name}.json").exists():
                t = read_data(data / f"transfer_train_K{K}.nc")
                self._train_one(case.surrogate, name, t["X"].values, t["target"].values, model_dir, history, K,
                                rollout=False)
                write_json(hist_file, history)

    # ------------------------------------------------------------ evaluate
    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        case, ev, d = self.case, self.case.evaluate, self.case.data
        model_dir = self.run.path / "model"
        ours = case.surrogate.label
        models = {m.label: HybridModel.load(model_dir, m.label, self.device) for m in case.methods}
        test = read_data(data / "test.nc")
        Xt, Tt, Bt = test["X"].values, test["target"].values, test["X_history"].values
        climate_mean = float(read_data(data / "train.nc")["X"].mean())
        rows: list[dict[str, Any]] = []
        seed = case.seed

        # offline closure error
        for name, m in models.items():
            if m.role == "closure":
                rmse, r2 = E.closure_scores(m, Xt, Tt, Bt)
                rows += [E.row(name, "closure_rmse", rmse), E.row(name, "closure_r2", r2)]

        # forecasts from held-out initial states
        per = case.steps(d.forecast_mtu)
        # a closure with memory starts from the true states just before X0, as a forecaster has them
        X0, truth, past = E.forecast_windows(Xt, per, d.forecasts_per_trajectory, Bt)
        leads = {f"{lead:g}mtu": case.steps(lead) for lead in ev.leads_mtu}
        mean_label = f"{ev.mean_rmse_mtu:g}mtu"
        self.log(f"evaluate: {len(X0)} forecasts of {d.forecast_mtu:g} MTU from held-out trajectories")
        sq, rmse_t, samples = {}, {}, {}
        for name, m in models.items():
            err = E.forecast_errors(m, X0, truth, seed, f"forecast {name}", past)
            rows += E.forecast_scores(name, err, truth, climate_mean, leads, case.steps(ev.mean_rmse_mtu),
                                      mean_label, ev.bootstrap, seed)
            sq[name] = np.nan_to_num(np.mean(err**2, axis=-1), nan=1e12, posinf=1e12)
            rmse_t[name] = np.sqrt(np.mean(sq[name], axis=0))
            samples[name] = (truth[: ev.sample_forecasts] + err[: ev.sample_forecasts])
        for label, s in leads.items():
            others = {n: q[:, s] for n, q in sq.items() if n != ours}
            # the best dynamical model: climatology is a reference, not a forecast model
            dynamical = {n: q for n, q in others.items() if models[n].method.kind != "climatology"}
            best = E.paired_lead(ours, sq[ours][:, s], dynamical, f"lead_over_best_{label}", ev.bootstrap, seed)
            rows += [best] if best else []
            for other, q in others.items():
                rows.append(E.paired_lead(ours, sq[ours][:, s], {other: q}, f"lead_over_{other}_{label}",
                                          ev.bootstrap, seed))

        # climate: free runs against two independent truth ensembles
        climate_a = read_data(data / "climate_a.nc")
        ca, cb = climate_a["X"].values, read_data(data / "climate_b.nc")["X"].values
        bins = np.linspace(*ev.hist_range, ev.hist_bins + 1)
        record = max(1, case.steps(d.climate_record_mtu))
        max_lag = max(1, int(round(ev.acf_max_lag_mtu / (record * case.coarse_dt))))
        pdf_a, acf_a = M.histogram_pdf(ca, bins), M.autocorrelation(ca, max_lag)
        pdf_b, acf_b = M.histogram_pdf(cb, bins), M.autocorrelation(cb, max_lag)
        rows += [E.row("truth", "bounded_fraction", 1.0), E.row("truth", "hellinger", M.hellinger(pdf_b, pdf_a)),
                 E.row("truth", "acf_rmse", M.rmse(acf_b, acf_a))]
        pdfs, acfs = {"truth": pdf_a, "truth_independent": pdf_b}, {"truth": acf_a, "truth_independent": acf_b}
        steps = (ca.shape[1] - 1) * record
        self.log(f"evaluate: {len(ca)} free runs of {d.climate_mtu:g} MTU per method")
        for name, m in models.items():
            if m.method.kind == "climatology" or name in ev.climate_skip:
                continue  # a constant has no climate to compare
            runs = E.climate_run(m, ca[:, 0], steps, record, seed, f"climate {name}", climate_a["X_history"].values)
            r, pdfs[name], acfs[name] = E.climate_scores(name, runs, pdf_a, acf_a, bins, max_lag, ev.bound)
            rows += r

        # domain-size transfer: the K-trained closure at other K, beside one retrained there
        variants = {ours: models[ours]}
        if (model_dir / f"{ours}.offline.json").exists():
            variants[f"{ours}_offline"] = HybridModel.load(model_dir, f"{ours}.offline", self.device)
        if getattr(models[ours].method, "ring_size", None):  # the same weights without the remapping
            plain = HybridModel.load(model_dir, ours, self.device)
            plain.method.ring_size = None
            variants[f"{ours}_modes_by_index"] = plain
        for K in d.transfer_K:
            t = read_data(data / f"transfer_test_K{K}.nc")
            Xk, Tk, Bk = t["X"].values, t["target"].values, t["X_history"].values
            retrained = HybridModel.load(model_dir, f"{ours}_retrained_K{K}", self.device)
            ref, _ = E.closure_scores(retrained, Xk, Tk, Bk)
            rows.append(E.row(f"{ours}_retrained", f"closure_rmse_K{K}", ref))
            for vname, vm in variants.items():
                val, _ = E.closure_scores(vm, Xk, Tk, Bk)
                rows += [E.row(vname, f"closure_rmse_K{K}", val), E.row(vname, f"transfer_gap_K{K}", val / ref - 1)]

        # cost: hybrid against the full solver, same ensemble and simulated time, one process
        for K, J in ev.cost:
            timed = {name: models[name] for name in [ours, *ev.cost_methods]}
            t = E.cost_comparison(case, timed, Xt[:, 0], K, J, seed)
            rows.append(E.row("full_solver", f"wall_s_K{K}_J{J}", t["full"], unit="s"))
            for name in timed:
                rows += [E.row(name, f"wall_s_K{K}_J{J}", t[name], unit="s"),
                         E.row(name, f"speedup_K{K}_J{J}", t["full"] / t[name])]
            self.log(f"evaluate: cost K={K} J={J}: full {t['full']:.3g} s, "
                     + ", ".join(f"{name} {t[name]:.3g} s" for name in timed))

        head = next((r for r in rows if r["method"] == ours and r["metric"] == ev.headline), None)
        metrics = {"surrogate": ours, "methods": list(models), "table_metrics": TABLE,
                   "headline": {k: head[k] for k in ("method", "metric", "value")} if head else {}, "rows": rows}
        return metrics, self._predictions(models, rmse_t, samples, truth, pdfs, acfs, bins, max_lag, record, Xt, Tt,
                                          Bt)

    def _predictions(self, models, rmse_t, samples, truth, pdfs, acfs, bins, max_lag, record, Xt, Tt,
                     Bt) -> xr.Dataset:
        case, ev = self.case, self.case.evaluate
        names = list(models)
        n_s = min(ev.sample_forecasts, len(truth))
        lead = np.arange(truth.shape[1]) * case.coarse_dt
        rng = np.random.default_rng(case.seed)
        pick = rng.choice(Xt.reshape(-1, Xt.shape[-1]).shape[0], size=min(2000, Xt[..., 0].size), replace=False)
        x_pts = Xt.reshape(-1, Xt.shape[-1])[pick]
        u_pred = np.full((len(names), len(pick), Xt.shape[-1]), np.nan)
        for i, n in enumerate(names):
            m = models[n]
            if m.role == "closure" and m.memory:  # the true states before each point
                hist = E.histories(Xt, Bt, m.memory).reshape(-1, m.memory, Xt.shape[-1])[pick]
                u_pred[i] = m.closure(x_pts, hist)
            elif m.role == "closure":
                u_pred[i] = m.closure(x_pts)
        sources = list(pdfs)
        one = lambda long_name: {"long_name": long_name, "units": "1"}  # noqa: E731
        coords = {
            "method": ("method", names, {"long_name": "closure or emulator", "units": "1"}),
            "source": ("source", sources, {"long_name": "truth ensemble or method of the free runs", "units": "1"}),
            "lead": ("lead", lead, {"long_name": "forecast lead time in model time units", "units": "1",
                                    "axis": "T"}),
            "sample": ("sample", np.arange(n_s), one("forecast index")),
            "k": ("k", np.arange(truth.shape[2]), {**one("site on the slow ring"), "axis": "X"}),
            "bin": ("bin", 0.5 * (bins[1:] + bins[:-1]), one("centre of the X histogram bin")),
            "lag": ("lag", np.arange(max_lag + 1) * record * case.coarse_dt, one("lag in model time units")),
            "point": ("point", np.arange(len(pick)), one("held-out sample index")),
        }
        data = {
            "rmse": (("method", "lead"), np.stack([rmse_t[n] for n in names]), one("forecast RMSE of X")),
            "x_reference": (("sample", "lead", "k"), truth[:n_s], {**one("true X"), "surrogate_role": "reference"}),
            "x_prediction": (("method", "sample", "lead", "k"), np.stack([samples[n][:n_s] for n in names]),
                             {**one("forecast X"), "surrogate_role": "prediction"}),
            "pdf": (("source", "bin"), np.stack([pdfs[s] for s in sources]), one("probability of X per bin")),
            "acf": (("source", "lag"), np.stack([acfs[s] for s in sources]), one("autocorrelation of X")),
            "x_point": (("point", "k"), x_pts, one("held-out slow state")),
            "u_reference": (("point", "k"), Tt.reshape(-1, Tt.shape[-1])[pick],
                            {**one("true closure tendency"), "surrogate_role": "reference"}),
            "u_prediction": (("method", "point", "k"), u_pred,
                             {**one("predicted closure tendency"), "surrogate_role": "prediction"}),
        }
        return xr.Dataset(data, coords, attrs={
            "title": f"Lorenz96 evaluation of case {case.name}", "surrogate_case": case.name,
            "surrogate_family": "lorenz96", "seed": case.seed,
            "source": "two-scale Lorenz96 truth; hybrid coarse models with learned closures",
        })

    # --------------------------------------------------------------- report
    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figs = self.run.sub("figures")
        p = predictions
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in p.method.values:
            ax.plot(p.lead, p.rmse.sel({"method": m}), label=str(m))
        ax.set(xlabel="lead time (MTU)", ylabel="RMSE of X", title="Forecast error, held-out initial states")
        ax.set_ylim(0, min(float(p.rmse.max()), 3 * float(p.x_reference.std())) * 1.05)
        ax.legend(fontsize=8)
        save_figure(fig, figs / "forecast_rmse.png")

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for s in p.source.values:
            style = {"color": "k", "lw": 2} if s == "truth" else {}
            axes[0].plot(p.bin, p.pdf.sel(source=s), label=str(s), **style)
            axes[1].plot(p.lag, p.acf.sel(source=s), label=str(s), **style)
        axes[0].set(xlabel="X", ylabel="probability per bin", title="Climate: distribution of X")
        axes[1].set(xlabel="lag (MTU)", ylabel="autocorrelation", title="Climate: autocorrelation of X")
        axes[1].legend(fontsize=7)
        save_figure(fig, figs / "climate.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        order = np.argsort(p.x_point.values.ravel())
        ax.scatter(p.x_point.values.ravel(), p.u_reference.values.ravel(), s=2, c="0.6", label="truth")
        for m in p.method.values:
            u = p.u_prediction.sel({"method": m}).values.ravel()
            if np.isfinite(u).any():
                ax.plot(p.x_point.values.ravel()[order], u[order], ".", ms=1.5, label=str(m))
        ax.set(xlabel="X_k", ylabel="closure tendency", title="Closure on held-out states")
        ax.legend(fontsize=7, markerscale=6)
        save_figure(fig, figs / "closure.png")

        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot(p.lead, p.x_reference.isel(sample=0, k=0), "k", lw=2, label="truth")
        for m in p.method.values:
            ax.plot(p.lead, p.x_prediction.sel({"method": m}).isel(sample=0, k=0), label=str(m))
        ax.set(xlabel="lead time (MTU)", ylabel="X_0", title="One forecast")
        ax.legend(fontsize=7)
        save_figure(fig, figs / "sample_forecast.png")

        hist = read_json(self.run.path / "model" / "training.json")
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, h in hist.items():
            if h["offline"]:
                ax.semilogy(np.arange(1, len(h["offline"]) + 1), h["offline"], label=f"{name} offline")
            if h["rollout"]:
                x0 = len(h["offline"])
                ax.semilogy(x0 + np.arange(1, len(h["rollout"]) + 1), h["rollout"], "--", label=f"{name} rollout")
        ax.set(xlabel="epoch", ylabel="training loss (normalised)", title="Learning curves")
        ax.legend(fontsize=7)
        save_figure(fig, figs / "training.png")

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, run: RunFolder, device: str = "cpu", method: str | None = None) -> HybridModel:
        model_dir = run.path / "model"
        return HybridModel.load(model_dir, method_name(model_dir, method), device)

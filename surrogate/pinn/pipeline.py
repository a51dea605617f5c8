"""The pinn pipeline: reference solution -> PIG and deepxde PINN baselines -> errors on a dense grid."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core import distributed
from surrogate.core.executor import map_tasks
from surrogate.core.methods import method_name, write_index
from surrogate.core.metrics import relative_l2
from surrogate.core.report import metric_row, save_figure
from surrogate.core.runner import Pipeline
from surrogate.core.store import RunFolder, data_path, read_data, read_json, write_data
from surrogate.pinn.field import FieldModel, coord_attrs
from surrogate.pinn.pdes import cf_order, grid_points, make_problem
from surrogate.pinn.pig import PIG
from surrogate.pinn.schema import PINNCase
from surrogate.pinn.training import train_pig

DEFAULT_TEST_POINTS = {
    "helmholtz": {"x": 250, "y": 250},
    "klein_gordon": {"x": 50, "y": 50, "t": 50},
    "flow_mixing": {"x": 50, "y": 50, "t": 50},
    "burgers": {"x": 256, "t": 201},
    "allen_cahn": {"x": 512, "t": 201},
}
TABLE = ["rel_l2", "rel_l2_best_during_training", "train_seconds", "steps", "parameters", "error_ratio_to_pig"]


def test_points(case: PINNCase) -> dict[str, int]:
    return {**DEFAULT_TEST_POINTS[case.pde.name], **case.data.test_points}


def reference_solution(task: dict[str, Any]) -> xr.Dataset:
    """The solver task of a PINN case: the reference solution on the test grid, as a CF dataset."""
    pde = task["pde"]
    problem = make_problem(pde["name"], pde["params"], pde["domain"])
    grid = problem.test_grid(task["points"])
    u = problem.reference(grid, quadrature_nodes=task["quadrature_nodes"], modes=task["modes"], dt=task["dt"])
    how = {"burgers": f"Cole-Hopf integral, {task['quadrature_nodes']}-node Gauss-Hermite quadrature",
           "allen_cahn": f"Fourier spectral ETDRK4, {task['modes']} modes, dt = {task['dt']:g}"}
    how = how.get(problem.name, "exact")
    dims = cf_order(problem.coords)
    return xr.Dataset(
        {"u": (dims, u, {"long_name": f"reference solution of {problem.name}", "units": "1",
                         "surrogate_role": "reference"})},
        coords={c: (c, grid[c], coord_attrs(c, problem)) for c in dims},
        attrs={"title": f"{problem.name} reference solution", "source": how, "pde_parameters": str(problem.params)})


class PINNPipeline(Pipeline):
    Case = PINNCase
    family = "pinn"

    @classmethod
    def data_config(cls, case: PINNCase) -> dict[str, Any]:
        cfg = {"format": 1, "pde": case.pde.model_dump(mode="json"), "test_points": test_points(case)}
        if case.data.format != "netcdf":
            cfg["data_format"] = case.data.format
        if case.pde.name == "burgers":
            cfg["quadrature_nodes"] = case.data.quadrature_nodes
        if case.pde.name == "allen_cahn":
            cfg["modes"], cfg["dt"] = case.data.modes, case.data.dt
        return cfg

    def generate_data(self, out: Path) -> None:
        target = out / "reference.nc"
        if data_path(target):
            return
        d = self.case.data
        task = {"pde": self.case.pde.model_dump(mode="json"), "points": test_points(self.case),
                "quadrature_nodes": d.quadrature_nodes, "modes": d.modes, "dt": d.dt}
        # one solver task (the reference solution), through the case's executor like every family's data
        fmt = self.case.data.format
        map_tasks(reference_solution, [task], ["reference"], lambda i, ds: write_data(ds, target, fmt, {"t": 64}),
                  self.case.executor, 1, log=self.log)

    # ------------------------------------------------------------------ fit
    def _problem_spec(self) -> dict[str, Any]:
        problem = self.case.problem()
        domain = {c: list(b) for c, b in problem.bounds.items()}
        return {"name": problem.name, "params": problem.params, "domain": domain}

    def _monitor(self, data: Path):
        """Test error on a fixed subset of the reference grid (for learning curves)."""
        ref = read_data(data / "reference.nc")
        coords = self.case.problem().coords
        pts = grid_points({c: ref[c].values for c in coords}, coords)
        u = ref["u"].values.ravel()
        rng = np.random.default_rng(self.case.seed)
        pick = rng.choice(len(pts), size=min(self.case.data.curve_points, len(pts)), replace=False)
        pts, u = pts[pick], u[pick]

        def monitor(module) -> float:
            was = module.training
            module.eval()
            dtype = next(module.parameters()).dtype
            with torch.no_grad():
                pred = torch.cat([module(torch.as_tensor(pts[i : i + 8192], dtype=dtype)).reshape(-1)
                                  for i in range(0, len(pts), 8192)]).double().numpy()
            module.train(was)
            return relative_l2(pred, u)
        return monitor

    def fit(self, data: Path) -> None:
        case, problem = self.case, self.case.problem()
        model_dir, ckpt = self.run.sub("model"), self.run.sub("checkpoints")
        methods = ["pig", *[b.label for b in case.evaluate.baselines]]
        write_index(model_dir, "pig", methods)
        monitor = self._monitor(data)
        s = case.surrogate
        if not (model_dir / "pig.json").exists():
            pig = PIG(problem.lower, problem.upper, s.n_gaussians, s.channels, s.hidden, s.sigma_init, s.weight_std,
                      s.input_range, [c in problem.periodic for c in problem.coords], s.covariance, case.seed,
                      s.dtype, s.local_cutoff, s.sigma_min)
            n_params = sum(p.numel() for p in pig.parameters())
            self.log(f"fit: PIG, {s.channels} x {s.n_gaussians} Gaussians, {n_params} parameters, {s.dtype}, "
                     f"{s.derivatives.replace('_', ' ')} derivatives")
            curve = train_pig(pig, problem, case.train, s.derivatives, case.seed, ckpt, monitor, self.log)
            meta = {"case": case.name, "method": "pig", "parameters": n_params, "coords": list(problem.coords)}
            FieldModel(pig, "pig", self._problem_spec(), meta).save(model_dir, "pig", {"curve": curve})
        if not distributed.is_main():  # under torchrun the other ranks help with PIG only
            return
        pig_seconds = read_json(model_dir / "pig.json")["curve"]["seconds"][-1]
        for spec in case.evaluate.baselines:
            if (model_dir / f"{spec.label}.json").exists():
                continue
            from surrogate.pinn.baselines import train_deepxde

            limit = pig_seconds if spec.time_limit == "match" else spec.time_limit
            self.log(f"fit: deepxde PINN {spec.label}: {spec.depth} x {spec.width} {spec.activation}, "
                     f"budget {'none' if limit is None else f'{limit:.0f} s'}")
            net, curve = train_deepxde(problem, spec, case.seed, limit, monitor, self.log)
            n_params = sum(p.numel() for p in net.parameters())
            meta = {"case": case.name, "method": spec.label, "parameters": n_params, "coords": list(problem.coords),
                    "net": {"dim": problem.dim, "width": spec.width, "depth": spec.depth,
                            "activation": spec.activation}}
            FieldModel(net, "deepxde_pinn", self._problem_spec(), meta).save(model_dir, spec.label, {"curve": curve})

    # ------------------------------------------------------------- evaluate
    def evaluate(self, data: Path) -> tuple[dict[str, Any], xr.Dataset]:
        problem = self.case.problem()
        model_dir = self.run.path / "model"
        ref = read_data(data / "reference.nc")
        dims = cf_order(problem.coords)
        pts = grid_points({c: ref[c].values for c in problem.coords}, problem.coords)
        u_ref = ref["u"].values
        methods = read_json(model_dir / "index.json")["methods"]
        rows, preds, curves, errors = [], {}, {}, {}
        for name in methods:
            m = FieldModel.load(model_dir, name)
            info = read_json(model_dir / f"{name}.json")
            preds[name] = m(pts).reshape(u_ref.shape)
            curves[name] = info["curve"]
            errors[name] = relative_l2(preds[name], u_ref)
            c = info["curve"]
            rows += [metric_row(name, "rel_l2", errors[name]),
                     metric_row(name, "rel_l2_best_during_training", min(c["error"]) if c["error"] else np.nan),
                     metric_row(name, "train_seconds", c["seconds"][-1] if c["seconds"] else 0.0, unit="s"),
                     metric_row(name, "steps", c["step"][-1] if c["step"] else 0),
                     metric_row(name, "parameters", info["metadata"]["parameters"])]
            if name != "pig":
                rows.append(metric_row(name, "error_ratio_to_pig", errors[name] / errors["pig"]))
        self.log("evaluate: " + ", ".join(f"{n} rel. L2 {e:.3e}" for n, e in errors.items()))
        metrics = {"surrogate": "pig", "methods": methods, "table_metrics": TABLE,
                   "headline": {"method": "pig", "metric": "rel_l2", "value": errors["pig"]}, "rows": rows}
        return metrics, self._predictions(ref, dims, methods, preds, curves, model_dir)

    def _predictions(self, ref, dims, methods, preds, curves, model_dir) -> xr.Dataset:
        problem = self.case.problem()
        pig = FieldModel.load(model_dir, "pig").module
        centres = pig.centres().detach().double().numpy()
        n_rec = max(len(c["seconds"]) for c in curves.values())
        pad = lambda v: np.pad(np.asarray(v, float), (0, n_rec - len(v)), constant_values=np.nan)  # noqa: E731
        one = lambda long_name: {"long_name": long_name, "units": "1"}  # noqa: E731
        stacked = np.stack([preds[m] for m in methods])
        coords = {c: (c, ref[c].values, dict(ref[c].attrs)) for c in dims}
        coords.update({
            "method": ("method", methods, one("solution method")),
            "coordinate": ("coordinate", list(problem.coords), one("input coordinate of the field")),
            "channel": ("channel", np.arange(centres.shape[0]), one("PIG feature channel")),
            "gaussian": ("gaussian", np.arange(centres.shape[1]), one("Gaussian index within its channel")),
            "record": ("record", np.arange(n_rec), one("learning-curve record")),
        })
        ds = xr.Dataset({
            "u_reference": (dims, ref["u"].values, {**one(ref["u"].attrs["long_name"]), "surrogate_role": "reference"}),
            "u_prediction": (("method", *dims), stacked,
                             {**one("predicted solution u"), "surrogate_role": "prediction"}),
            "u_error": (("method", *dims), stacked - ref["u"].values[None],
                        {**one("prediction minus reference"), "surrogate_role": "error"}),
            "gaussian_centre": (("channel", "gaussian", "coordinate"), centres, one("final PIG Gaussian mean")),
            "curve_seconds": (("method", "record"), np.stack([pad(curves[m]["seconds"]) for m in methods]),
                              {"long_name": "training wall time", "units": "s"}),
            "curve_error": (("method", "record"), np.stack([pad(curves[m]["error"]) for m in methods]),
                            one("relative L2 error on the monitored test points")),
        }, coords, attrs={"title": f"PINN evaluation of case {self.case.name}", "surrogate_case": self.case.name,
                          "surrogate_family": "pinn", "seed": self.case.seed, "source": ref.attrs.get("source", ""),
                          "pde": problem.name})
        return ds

    # --------------------------------------------------------------- report
    def report(self, data: Path, metrics: dict[str, Any], predictions: xr.Dataset) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        p, problem = predictions, self.case.problem()
        figs = self.run.sub("figures")
        fig, ax = plt.subplots(figsize=(6, 4))
        for m in p.method.values:
            ax.loglog(p.curve_seconds.sel({"method": m}), p.curve_error.sel({"method": m}), ".-", label=str(m))
        ax.set(xlabel="training wall time (s)", ylabel="relative L2 error (monitored test points)",
               title=f"{problem.name}: error against wall time")
        ax.legend()
        save_figure(fig, figs / "error_vs_time.png")

        # field, prediction and error in the plane of the first two dims (the last time for (2+1)D)
        sel = {"t": -1} if problem.dim == 3 else {}
        plane = [c for c in ("x", "y", "t") if c in problem.coords and c not in sel][:2]
        ref = p.u_reference.isel(sel)
        err = p.u_error.sel({"method": "pig"}).isel(sel)
        extent = [float(f(p[c])) for c in plane for f in (np.min, np.max)]
        fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        pig = p.u_prediction.sel({"method": "pig"}).isel(sel)
        for ax, arr, title in ((axes[0], ref, "reference"), (axes[1], pig, "PIG"),
                               (axes[2], abs(err), "|PIG - reference| with Gaussian centres")):
            im = ax.imshow(arr.transpose(plane[1], plane[0]).values, origin="lower", extent=extent, aspect="auto",
                           cmap="magma" if ax is axes[2] else "RdBu_r")
            fig.colorbar(im, ax=ax)
            ax.set(xlabel=plane[0], ylabel=plane[1], title=title)
        c = p.gaussian_centre
        axes[2].scatter(c.sel(coordinate=plane[0]).values.ravel(), c.sel(coordinate=plane[1]).values.ravel(), s=2,
                        c="cyan", alpha=0.5)
        axes[2].set(xlim=extent[:2], ylim=extent[2:])
        if sel:
            fig.suptitle(f"t = {float(p.t[-1]):g}; centres of all times projected")
        save_figure(fig, figs / "field_error_centres.png")

    # ----------------------------------------------------------------- load
    @classmethod
    def load(cls, run: RunFolder, device: str = "cpu", method: str | None = None) -> FieldModel:
        model_dir = run.path / "model"
        return FieldModel.load(model_dir, method_name(model_dir, method))

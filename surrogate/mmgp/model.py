"""The MMGP surrogate: morph, transfer to a common mesh, POD, GPs; and back, with uncertainty.

Casenave, Staber, Roynard, "MMGP: a Mesh Morphing Gaussian Process-based machine learning method for
regression of physical problems under non-parameterized geometrical variability", NeurIPS 2023
(arXiv:2305.12871).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.core.store import load_weights, read_json, save_weights, write_json
from surrogate.mmgp.data import FIELDS, SCALAR_INPUTS, Sample
from surrogate.mmgp.fem import SCALAR_OUTPUTS
from surrogate.mmgp.gp import GPPredictor, fit_gps
from surrogate.mmgp.morphing import (
    PointLocator,
    ReferenceShape,
    check_mesh,
    hole_centre,
    interpolation_matrix,
    morph,
    outer_perimeter,
    signed_areas,
)
from surrogate.mmgp.numpy_mmgp import (
    FIELD_PERCENTILES,
    NumpyMMGP,
    decode_field,
    field_percentile,
    gp_inputs,
    transform_field,
    unit,
)
from surrogate.mmgp.pod import POD, mass_matrix


class NotFitted(RuntimeError):
    pass


class Standardizer:
    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = np.asarray(mean, float), np.where(np.asarray(std) > 0, std, 1.0)

    @classmethod
    def fit(cls, values: np.ndarray) -> "Standardizer":
        return cls(values.mean(0), values.std(0))

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std


def _unit_mean_square_spread(squared_errors: np.ndarray, variances: np.ndarray, scale2: np.ndarray) -> float:
    """The s >= 0 with mean(e^2 / (v + s^2 c^2)) = 1 (bisection: the left side falls as s grows); 0 when the
    variances alone already cover the errors."""
    ratio = lambda s: float(np.mean(squared_errors / (variances + s**2 * scale2 + 1e-300)))  # noqa: E731
    if ratio(0.0) <= 1.0:
        return 0.0
    low, high = 0.0, 1.0
    while ratio(high) > 1.0:
        high *= 2
    for _ in range(60):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if ratio(mid) > 1.0 else (low, mid)
    return high


class MMGP:
    """Call `fit(samples)` (or load a trained one); then `predict(mesh, scalars)`.

    Settings (see MMGPSpec): morphing, shape_modes, shape_modes_per_output, field_modes, energy, center, scaling,
    von_mises_transform, log_offset, kernel, own_kernel_modes, tail_group, log_scalars, percentile_from_field,
    restarts, max_iter, noise_floor, truncation_variance, loo_calibration, scalar_cv_folds, uncertainty.
    """

    def __init__(self, **settings: Any):
        self.settings = settings

    # ----------------------------------------------------------------- geometry
    # common_disk_: the common mesh's nodes on the common support (the unit disk, or the reference shape)
    def _disk(self, nodes: np.ndarray, triangles: np.ndarray) -> np.ndarray:
        return morph(self.settings["morphing"], nodes, triangles, reference=getattr(self, "reference_", None))

    def _to_common(self, nodes, triangles):
        """P: P1 transfer from the sample's morphed mesh to the common mesh nodes, and the morphed nodes."""
        disk = self._disk(nodes, triangles)
        return interpolation_matrix(disk, triangles, self.common_disk_), disk

    def _common_sample(self, samples: list[Sample]) -> Sample:
        """The authors' "median", the middle training sample. For rbf morphing, among the tenth of the training
        shapes whose holes sit nearest the median hole position (all shapes when they have none), the one with
        the shortest outer boundary: notches and wiggles lengthen it, and another shape's straight side pulled
        into the reference's notch squeezes the triangles there (with the middle sample as reference 2 of 500
        notched specimens folded in 4 increments and one test shape in 16; with this choice none did)."""
        if self.settings["morphing"] != "rbf":
            return samples[len(samples) // 2]
        centres = np.array([hole_centre(smp.nodes, smp.triangles) for smp in samples])
        near = (np.arange(len(samples)) if np.isnan(centres).any()
                else np.argsort(np.linalg.norm(centres - np.median(centres, 0), axis=1))[: max(1, len(samples) // 10)])
        return samples[min(near, key=lambda i: outer_perimeter(samples[i].nodes, samples[i].triangles))]

    # ---------------------------------------------------------------------- fit
    def fit(self, samples: list[Sample], seed: int = 0) -> "MMGP":
        s = self.settings
        common = self._common_sample(samples)
        self.common_triangles_ = common.triangles
        if s["morphing"] == "rbf":  # the reference shape is the common support and its own mesh the common mesh
            self.reference_ = ReferenceShape(common.nodes, common.triangles)
        self.common_disk_ = self._disk(common.nodes, common.triangles)
        mass = mass_matrix(self.common_disk_, self.common_triangles_)
        scaling = s.get("scaling", "none")
        coords, fields, disks = [], {f: [] for f in FIELDS}, []
        for smp in samples:
            P, disk = self._to_common(smp.nodes, smp.triangles)
            disks.append(disk)
            xy = P @ smp.nodes
            coords.append(np.concatenate([xy[:, 0], xy[:, 1]]))
            for f in FIELDS:
                fields[f].append(P @ smp.fields[f] / self._unit(f, smp.inputs))
        self.field_transforms_ = {f: ("none", 0.0) for f in FIELDS}
        if s.get("von_mises_transform", "none") != "none":
            offset = s.get("log_offset", 0.01) * float(np.mean(fields["von_mises"]))
            self.field_transforms_["von_mises"] = (s["von_mises_transform"], offset)
        fields = {f: transform_field(np.array(v), *self.field_transforms_[f]) for f, v in fields.items()}
        most = max([s["shape_modes"], *s.get("shape_modes_per_output", {}).values()])
        self.shape_pod_ = POD(most, s["energy"], s["center"], components=2).fit(np.array(coords), mass)
        self.field_pods_ = {f: POD(s["field_modes"], s["energy"], s["center"]).fit(np.array(v), mass)
                            for f, v in fields.items()}
        shape_coef = self.shape_pod_.transform(np.array(coords))
        if self.settings.get("shape_input") == "true_parameters":  # the oracle baseline
            shape_coef = np.array([smp.shape_parameters for smp in samples])
        inputs = gp_inputs(np.array([smp.inputs for smp in samples]), scaling)
        self.input_scaler_ = Standardizer.fit(inputs)
        X = np.column_stack([shape_coef, self.input_scaler_(inputs)])
        self.x_scaler_ = Standardizer.fit(X)
        x = self.x_scaler_(X)
        targets = [self.field_pods_[f].transform(np.array(fields[f])) for f in FIELDS]
        scalars = np.array([[o / self._unit(k, smp.inputs) for k, o in zip(SCALAR_OUTPUTS, smp.outputs)]
                            for smp in samples])
        targets.append(self._scalar_targets(scalars))
        Y = np.column_stack(targets)
        self.y_scaler_ = Standardizer.fit(Y)
        self.groups_ = self._groups()
        self.active_inputs_ = self._active_inputs(shape_coef.shape[1], X.shape[1])
        # nearest-neighbour distances between training shapes: the yardstick for "far outside"
        z = x[:, : shape_coef.shape[1]]
        dist = np.linalg.norm(z[:, None] - z[None], axis=-1) + np.diag(np.full(len(z), np.inf))
        self.shape_distance_limit_ = float(3 * np.percentile(dist.min(1), 99)) if len(z) > 1 else np.inf
        self.hyper_ = fit_gps(x, self.y_scaler_(Y), self.groups_, s["restarts"], s["max_iter"], s["noise_floor"], seed,
                              self.active_inputs_)
        self._build(x, self.y_scaler_(Y))
        if s.get("loo_calibration", False):
            self.hyper_["variance_factor"] = self.gp_.loo_variance_factor()
            self._build(x, self.y_scaler_(Y))
        if s.get("scalar_cv_folds", 0) >= 2:
            factors = self.hyper_.get("variance_factor", torch.ones(len(self.groups_), dtype=torch.float64)).clone()
            for g, factor in self._cross_validated_factors(x, self.y_scaler_(Y), s["scalar_cv_folds"], seed).items():
                factors[g] = factor
            self.hyper_["variance_factor"] = factors
            self._build(x, self.y_scaler_(Y))
        self.percentile_calibration_ = (self._calibrate_percentiles(samples, disks, seed)
                                        if s.get("percentile_from_field") else {})
        return self

    def _k_fold(self, x: np.ndarray, y: np.ndarray, index: list[int], folds: int,
                seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance (n, columns of the groups `index`, in their order) at every training input, each
        row predicted by the groups' GPs with hyperparameters refitted on the other folds; variance factor 1."""
        s = self.settings
        groups, active = [self.groups_[g] for g in index], self.active_inputs_[index]
        columns = np.concatenate(groups)
        local = np.split(np.arange(len(columns)), np.cumsum([len(g) for g in groups])[:-1])
        mean, var = np.zeros((len(x), len(columns))), np.zeros((len(x), len(columns)))
        for held in np.array_split(np.random.default_rng(seed).permutation(len(x)), min(folds, len(x))):
            kept = np.setdiff1d(np.arange(len(x)), held)
            hyper = fit_gps(x[kept], y[kept][:, columns], local, s["restarts"], s["max_iter"], s["noise_floor"], seed,
                            active)
            mean[held], var[held] = GPPredictor(x[kept], y[kept][:, columns], local, hyper).predict(x[held])
        return mean, var

    def _cross_validated_factors(self, x: np.ndarray, y: np.ndarray, folds: int, seed: int) -> dict[int, float]:
        """Per scalar GP (group index), the mean squared standardised error on held-out shapes of K-fold
        cross-validation, hyperparameters refitted on each fold: the variance factor that makes errors on new
        shapes unit mean square. Scalars read off a field (`percentile_from_field`) are skipped."""
        skip = set(FIELD_PERCENTILES) if self.settings.get("percentile_from_field") else set()
        first = len(self.groups_) - len(SCALAR_OUTPUTS)
        factors = {}
        for j, name in enumerate(SCALAR_OUTPUTS):
            if name in skip:
                continue
            cols = self.groups_[first + j]
            mean, var = self._k_fold(x, y, [first + j], folds, seed)
            factors[first + j] = float(np.mean((y[:, cols] - mean) ** 2 / var))
        return factors

    def _field_k_fold(self, cols: slice, folds: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """K-fold predictions (standardised) of the outputs `cols` (one field's POD coefficients), their GPs
        refitted on each fold, variances times the trained variance factors."""
        index = [g for g, c in enumerate(self.groups_) if cols.start <= c[0] < cols.stop]
        mean, var = self._k_fold(self.x_train_, self.y_train_, index, folds, seed)
        factor = self.gp_.variance_factor.numpy()
        return mean, var * np.concatenate([np.full(len(self.groups_[g]), factor[g]) for g in index])

    def _calibrate_percentiles(self, samples: list[Sample], disks: list[np.ndarray],
                               seed: int) -> dict[str, list[float]]:
        """Per percentile output, [bias, spread]: the mean log ratio of the solver's value to the percentile of
        the held-out predicted field on each training shape, and the relative std that, added to the
        first-order GP variance, gives those held-out errors unit mean square (see NumpyMMGP). Held out:
        K-fold with refitted hyperparameters when `scalar_cv_folds` >= 2 (leave-one-out with the hyperparameters
        of all shapes underrates the error on new shapes), else closed-form leave-one-out."""
        mean, var = self.gp_.leave_one_out()
        starts = np.cumsum([0] + [self.field_pods_[f].n_modes_ for f in FIELDS])
        columns = {f: slice(a, b) for f, a, b in zip(FIELDS, starts[:-1], starts[1:])}
        folds = self.settings.get("scalar_cv_folds", 0)
        if folds >= 2:
            for f in {f for f, _ in FIELD_PERCENTILES.values()}:
                mean[:, columns[f]], var[:, columns[f]] = self._field_k_fold(columns[f], folds, seed)
        mean, var = mean * self.y_scaler_.std + self.y_scaler_.mean, var * self.y_scaler_.std**2
        common = PointLocator(self.common_disk_, self.common_triangles_)
        result = {}
        for name, (f, q) in FIELD_PERCENTILES.items():
            pod, cols = self.field_pods_[f], columns[f]
            levels, first_order, truth = [], [], []
            residual = pod.residual_variance_ if self.settings["truncation_variance"] else None
            for i, (smp, disk) in enumerate(zip(samples, disks)):
                Q = common.matrix(disk)
                u = self._unit(f, smp.inputs)
                field, jacobian, _ = decode_field(Q, pod.mean_, pod.modes_, mean[i, cols], var[i, cols], residual,
                                                  *self.field_transforms_[f])
                areas = np.abs(signed_areas(smp.nodes, smp.triangles))
                level, weights = field_percentile(u * field, smp.triangles, areas, q)
                levels.append(level)
                first_order.append(float(((weights @ jacobian * u) ** 2) @ var[i, cols]))
                truth.append(smp.outputs[list(SCALAR_OUTPUTS).index(name)])
            levels, first_order, truth = map(np.array, (levels, first_order, truth))
            bias = float(np.mean(np.log(truth / levels)))
            values = levels * np.exp(bias)
            result[name] = [bias, _unit_mean_square_spread((truth - values) ** 2, first_order, values**2)]
        return result

    def _scalar_targets(self, scalars: np.ndarray) -> np.ndarray:
        if not self.settings.get("log_scalars", False):
            return scalars
        if (scalars <= 0).any():  # the outputs of this case are positive by construction
            raise ValueError("log_scalars needs positive scalar outputs; set log_scalars: false for this data")
        return np.log(scalars)  # relative errors become absolute ones, the metric the GP then minimises

    def _unit(self, output: str, inputs: np.ndarray) -> float:
        return unit(output, inputs, self.settings.get("scaling", "none"))

    def _groups(self) -> list[np.ndarray]:
        groups, start = [], 0
        for f in FIELDS:
            n = self.field_pods_[f].n_modes_
            groups += self._field_groups(np.arange(start, start + n))
            start += n
        groups += [np.array([start + j]) for j in range(len(SCALAR_OUTPUTS))]
        return groups

    def _active_inputs(self, n_shape: int, n_inputs: int) -> np.ndarray:
        """(groups, inputs) mask of the GP inputs each group reads: the first `shape_modes` shape coefficients,
        or the count `shape_modes_per_output` gives its output, and every scalar input. The oracle's true
        shape parameters are all read."""
        active = np.ones((len(self.groups_), n_inputs), dtype=bool)
        if self.settings.get("shape_input") == "true_parameters":
            return active
        counts = self.settings.get("shape_modes_per_output", {})
        starts = np.cumsum([0] + [self.field_pods_[f].n_modes_ for f in FIELDS])
        names = [f for f, a, b in zip(FIELDS, starts[:-1], starts[1:]) for _ in range(a, b)] + list(SCALAR_OUTPUTS)
        for g, cols in enumerate(self.groups_):
            active[g, min(counts.get(names[cols[0]], self.settings["shape_modes"]), n_shape):n_shape] = False
        return active

    def _field_groups(self, cols: np.ndarray) -> list[np.ndarray]:
        """Outputs sharing a kernel: the leading modes carry most of the energy and each gets its own;
        the many small later modes share kernels, which costs one factorisation per group, not per mode."""
        kernel = self.settings["kernel"]
        if kernel == "shared_per_field":
            return [cols]
        own = len(cols) if kernel == "per_output" else self.settings.get("own_kernel_modes", 16)
        tail, step = cols[own:], self.settings.get("tail_group", 8)
        return [np.array([c]) for c in cols[:own]] + [tail[i:i + step] for i in range(0, len(tail), step)]

    def _build(self, x: np.ndarray, y: np.ndarray) -> None:
        self.x_train_, self.y_train_ = x, y
        self.gp_ = GPPredictor(x, y, self.groups_, self.hyper_)

    # ------------------------------------------------------------------ predict
    def _check_fitted(self) -> None:
        if not hasattr(self, "gp_"):
            raise NotFitted("this MMGP is not trained: call fit(samples) or surrogate.load(run) first")

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Everything prediction needs, as named numpy arrays (what `NumpyMMGP` reads)."""
        self._check_fitted()
        s, gp = self.settings, self.gp_
        pod = self.shape_pod_
        group_of_output = np.zeros(self.y_train_.shape[1], dtype=int)
        alpha = np.zeros_like(self.y_train_)
        for g, cols in enumerate(self.groups_):
            group_of_output[cols] = g
            alpha[:, cols] = gp.alpha[g].numpy()
        arrays = {
            "fields": np.array(list(FIELDS)), "scalars": np.array(list(SCALAR_OUTPUTS)),
            "scaling": np.array(s.get("scaling", "none")), "uncertainty": np.array(s["uncertainty"]),
            "truncation_variance": np.array(bool(s["truncation_variance"])),
            "log_scalars": np.array(bool(s.get("log_scalars", False))),
            "morphing": np.array(s["morphing"]),
            "common_disk": self.common_disk_, "common_triangles": self.common_triangles_,
            "shape_mean": pod.mean_, "shape_projector": pod._apply_mass(pod.modes_).T,
            "input_mean": self.input_scaler_.mean, "input_std": self.input_scaler_.std,
            "x_mean": self.x_scaler_.mean, "x_std": self.x_scaler_.std,
            "y_mean": self.y_scaler_.mean, "y_std": self.y_scaler_.std,
            "x_train": self.x_train_, "alpha": alpha, "group_of_output": group_of_output,
            "cholesky": gp.L.numpy(), "lengthscale": gp.kernel.base_kernel.lengthscale.detach().numpy()[:, 0],
            "outputscale": gp.kernel.outputscale.detach().numpy(), "noise": gp.noise.numpy(),
            "variance_factor": gp.variance_factor.numpy(),
            "shape_distance_limit": np.array(self.shape_distance_limit_),
            "percentile_from_field": np.array(bool(self.percentile_calibration_)),
        }
        for name, (bias, spread) in self.percentile_calibration_.items():
            arrays[f"{name}.log_bias"], arrays[f"{name}.log_spread"] = np.array(bias), np.array(spread)
        for f, field_pod in self.field_pods_.items():
            arrays[f"{f}.modes"], arrays[f"{f}.mean"] = field_pod.modes_, field_pod.mean_
            transform, offset = self.field_transforms_[f]
            arrays[f"{f}.transform"], arrays[f"{f}.offset"] = np.array(transform), np.array(offset)
            arrays[f"{f}.residual_variance"] = field_pod.residual_variance_
        return arrays

    def predict_arrays(self, nodes: np.ndarray, triangles: np.ndarray, inputs: np.ndarray,
                       shape_parameters: np.ndarray | None = None) -> dict[str, Any]:
        """Means and standard deviations of every field (on the given nodes) and every scalar.
        `shape_parameters` are the generator's parameters, used only by the oracle baseline."""
        self._check_fitted()
        if not hasattr(self, "predictor_"):  # the numpy path, with gpytorch's posterior for the GPs
            self.predictor_ = NumpyMMGP(self.to_arrays(), posterior=self.gp_.predict)
        inputs = np.asarray(inputs, float).reshape(-1)
        if inputs.shape != (len(SCALAR_INPUTS),):
            raise ValueError(f"expected scalars with shape ({len(SCALAR_INPUTS)},) = {list(SCALAR_INPUTS)}, "
                             f"got {inputs.shape}")
        oracle = self.settings.get("shape_input") == "true_parameters"
        coefficients = np.asarray(shape_parameters, float) if oracle else None
        return self.predictor_.predict(nodes, triangles, inputs, coefficients)

    def predict(self, mesh, scalars):
        """Predict on a mesh (a file meshio reads, a meshio.Mesh, or (nodes, triangles)) with scalar inputs
        (a mapping with keys load, shear, young, or a sequence in that order).

        Returns an xarray Dataset: per field `<name>` and `<name>_std` on the mesh nodes, per scalar
        output `<name>` and `<name>_std`, and `shape_distance`.
        """
        from surrogate.mmgp.meshes import read_mesh, to_prediction_dataset

        nodes, triangles = read_mesh(mesh)
        if isinstance(scalars, dict):
            missing = [k for k in SCALAR_INPUTS if k not in scalars]
            extra = [k for k in scalars if k not in SCALAR_INPUTS]
            if missing or extra:
                raise KeyError(f"scalars: expected keys {list(SCALAR_INPUTS)}; missing {missing}, unknown {extra}")
            values = np.array([float(scalars[k]) for k in SCALAR_INPUTS])
        else:
            values = np.asarray(scalars, float)
        nodes, triangles = check_mesh(nodes, triangles)
        result = self.predict_arrays(nodes, triangles, values)
        return to_prediction_dataset(nodes, triangles, values, result)

    # ---------------------------------------------------------------- save/load
    def save(self, folder: Path, name: str) -> None:
        self._check_fitted()
        t = lambda a: torch.as_tensor(np.asarray(a))  # noqa: E731
        state = {
            "common_disk": t(self.common_disk_), "common_triangles": t(self.common_triangles_),
            "x_train": t(self.x_train_), "y_train": t(self.y_train_),
            "input_mean": t(self.input_scaler_.mean), "input_std": t(self.input_scaler_.std),
            "x_mean": t(self.x_scaler_.mean), "x_std": t(self.x_scaler_.std),
            "y_mean": t(self.y_scaler_.mean), "y_std": t(self.y_scaler_.std),
            **{f"hyper.{k}": v for k, v in self.hyper_.items()},
        }
        for label, pod in [("shape", self.shape_pod_), *self.field_pods_.items()]:
            state[f"pod.{label}.modes"] = t(pod.modes_)
            state[f"pod.{label}.mean"] = t(pod.mean_)
            state[f"pod.{label}.eigenvalues"] = t(pod.eigenvalues_)
            state[f"pod.{label}.residual_variance"] = t(pod.residual_variance_)
        save_weights(folder / f"{name}.pt", state)
        write_json(folder / f"{name}.json", {
            "kind": "mmgp", "settings": self.settings, "groups": [g.tolist() for g in self.groups_],
            "shape_distance_limit": self.shape_distance_limit_,
            "percentile_calibration": self.percentile_calibration_,
            "field_transforms": self.field_transforms_,
            "modes": {"shape": self.shape_pod_.n_modes_, **{f: p.n_modes_ for f, p in self.field_pods_.items()}},
            "inputs": {k: {"units": u, "long_name": ln} for k, (u, ln) in SCALAR_INPUTS.items()},
            "fields": {k: {"units": u, "long_name": ln} for k, (u, ln) in FIELDS.items()},
            "scalars": {k: {"units": u, "long_name": ln} for k, (u, ln) in SCALAR_OUTPUTS.items()},
        })

    @classmethod
    def load(cls, folder: Path, name: str) -> "MMGP":
        meta = read_json(folder / f"{name}.json")
        state = load_weights(folder / f"{name}.pt")
        n = lambda k: state[k].numpy()  # noqa: E731
        m = cls(**meta["settings"])
        m.common_disk_, m.common_triangles_ = n("common_disk"), n("common_triangles")
        if m.settings["morphing"] == "rbf":
            m.reference_ = ReferenceShape(m.common_disk_, m.common_triangles_)
        m.input_scaler_ = Standardizer(n("input_mean"), n("input_std"))
        m.x_scaler_ = Standardizer(n("x_mean"), n("x_std"))
        m.y_scaler_ = Standardizer(n("y_mean"), n("y_std"))
        m.groups_ = [np.array(g) for g in meta["groups"]]
        m.shape_distance_limit_ = meta["shape_distance_limit"]
        m.percentile_calibration_ = meta.get("percentile_calibration", {})
        m.field_transforms_ = {f: tuple(meta.get("field_transforms", {}).get(f, ("none", 0.0))) for f in FIELDS}
        m.hyper_ = {k.removeprefix("hyper."): v for k, v in state.items() if k.startswith("hyper.")}
        pods = {}
        for label in ["shape", *FIELDS]:
            pod = POD(0, components=2 if label == "shape" else 1)
            pod.modes_, pod.mean_ = n(f"pod.{label}.modes"), n(f"pod.{label}.mean")
            pod.eigenvalues_ = n(f"pod.{label}.eigenvalues")
            pod.residual_variance_ = n(f"pod.{label}.residual_variance")
            pod.n_modes_ = pod.modes_.shape[0]
            pod.mass_ = mass_matrix(m.common_disk_, m.common_triangles_)
            pods[label] = pod
        m.shape_pod_ = pods.pop("shape")
        m.field_pods_ = pods
        m._build(n("x_train"), n("y_train"))
        return m

"""A trained MMGP as arrays and numpy: morph, project the shape, GP posterior, decode the fields.

The prediction path of `MMGP` itself; it is also what `surrogate export RUN --format numpy` ships,
together with `morphing.py`, so that a trained MMGP runs with numpy and scipy alone:

    model = NumpyMMGP.load("mmgp.npz")
    out = model.predict(nodes, triangles, [load, shear, young])
    out["fields"]["von_mises"]   # (mean, std) on the given nodes
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from scipy.linalg import solve_triangular

try:
    from surrogate.mmgp import morphing
except ImportError:  # the exported copy: morphing.py sits beside this file
    import morphing  # type: ignore[no-redef]

# Hyperelasticity with a strain energy proportional to Young's modulus E (fixed Poisson ratio): the
# displacement depends on the tractions only through t/E, and stresses and the compliance are E times
# a function of (shape, t/E). The "hyperelastic" scaling feeds the GPs these exact invariants.
SCALES_WITH_YOUNG = {"von_mises", "von_mises_p995", "compliance"}
# "hyperelastic_traction" divides these by the traction magnitude |t| instead: sigma/E is nearly linear in t/E,
# so sigma/|t| varies far less over the data than sigma/E, and what is left for the GPs is mostly the shape
STRESSES = {"von_mises", "von_mises_p995"}
SQRT5 = np.sqrt(5.0)
# scalar outputs that are percentiles by area of a nodal field (`field_percentile`; fem.py computes them so);
# with `percentile_from_field` they are read off the predicted field instead of a GP of their own
FIELD_PERCENTILES = {"von_mises_p995": ("von_mises", 99.5)}

# (mean, variance) of every standardised output at standardised GP inputs (n*, d)
Posterior = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def gp_inputs(inputs: np.ndarray, scaling: str) -> np.ndarray:
    inputs = np.atleast_2d(inputs)
    if scaling in ("hyperelastic", "hyperelastic_traction"):
        return inputs[:, :2] / inputs[:, 2:3]  # load / E, shear / E
    return inputs


def morphing_method(arrays: dict[str, np.ndarray]) -> str:
    """The morphing of a trained MMGP's arrays (older exports name it by its two disk settings)."""
    if "morphing" in arrays:
        return str(arrays["morphing"])
    setting = (bool(arrays["anchored"]), str(arrays.get("morphing_weights", "uniform")))
    return next(name for name, s in morphing.DISK_MORPHINGS.items() if s == setting)


def unit(output: str, inputs: np.ndarray, scaling: str) -> float:
    """What an output is divided by before regression: 1, E for stress-like outputs, or |t| for stresses."""
    if scaling == "hyperelastic_traction" and output in STRESSES:
        return float(np.hypot(inputs[0], inputs[1]))
    if scaling in ("hyperelastic", "hyperelastic_traction") and output in SCALES_WITH_YOUNG:
        return float(inputs[2])
    return 1.0


def decode_field(Q, mean: np.ndarray, modes: np.ndarray, coefficients: np.ndarray, variances: np.ndarray,
                 residual_variance: np.ndarray | None = None, transform: str = "none", offset: float = 0.0):
    """A field on a sample's nodes from its POD coefficients (their means and variances): the mean (N,), the
    Jacobian (N, k) of the field with respect to the coefficients, and the variance (N,).

    `residual_variance` (on the common mesh) adds what the POD truncation loses. With a `transform` the
    regressed field g is a function of the output and the output gets the mean and variance of the inverse
    image of that Gaussian: sqrt (output g^2: g^2 + v, 4 g^2 v + 2 v^2) or log (output e^g - offset:
    e^(g + v/2) - offset, (e^v - 1) e^(2g + v))."""
    regressed = Q @ (mean + coefficients @ modes)
    jacobian = Q @ modes.T
    var = jacobian**2 @ variances
    if residual_variance is not None:
        var = var + Q @ residual_variance
    if transform == "sqrt":
        return regressed**2 + var, 2 * regressed[:, None] * jacobian, 4 * regressed**2 * var + 2 * var**2
    if transform == "log":
        scale = np.exp(regressed)
        return scale * np.exp(0.5 * var) - offset, scale[:, None] * jacobian, np.expm1(var) * scale**2 * np.exp(var)
    return regressed, jacobian, var


def transform_field(values: np.ndarray, transform: str, offset: float) -> np.ndarray:
    """What the GPs regress for a non-negative field (see `decode_field` for the way back)."""
    if transform == "sqrt":
        return np.sqrt(np.clip(values, 0.0, None))
    if transform == "log":
        return np.log(np.clip(values, 0.0, None) + offset)
    return values


# 6-point degree-4 quadrature on a triangle (Strang and Fix): barycentric points and weights (sum 1)
_A, _B = 0.445948490915965, 0.091576213509771
QUADRATURE_POINTS = np.array([[1 - 2 * _A, _A, _A], [_A, 1 - 2 * _A, _A], [_A, _A, 1 - 2 * _A],
                              [1 - 2 * _B, _B, _B], [_B, 1 - 2 * _B, _B], [_B, _B, 1 - 2 * _B]])
QUADRATURE_WEIGHTS = np.array([0.223381589678011] * 3 + [0.109951743655322] * 3)


def field_percentile(nodal: np.ndarray, triangles: np.ndarray, areas: np.ndarray,
                     q: float) -> tuple[float, np.ndarray]:
    """The q-th percentile by area of a P1 nodal field (sampled at 6 quadrature points per triangle),
    and weights (N,) on the nodes whose dot product with a small perturbation of the field gives the
    percentile's first-order change: the points within half a percent of area of the percentile, averaged.

    The solver's percentile outputs are defined this way on its recovered nodal stresses (fem.py), so a
    percentile read off a predicted field measures the same thing."""
    values = (nodal[triangles] @ QUADRATURE_POINTS.T).ravel()  # (M * 6,), triangle-major
    w = (areas[:, None] * QUADRATURE_WEIGHTS[None]).ravel()
    order = np.argsort(values)
    w = w[order] / w.sum()
    rank = np.cumsum(w) - 0.5 * w
    level = float(np.interp(q / 100.0, rank, values[order]))
    band = order[np.abs(rank - q / 100.0) <= 0.005]
    if len(band) == 0:
        band = order[[min(np.searchsorted(rank, q / 100.0), len(order) - 1)]]
    tri, point = np.divmod(band, len(QUADRATURE_WEIGHTS))
    share = areas[tri] * QUADRATURE_WEIGHTS[point]
    weights = np.zeros(len(nodal))
    np.add.at(weights, triangles[tri].ravel(), (QUADRATURE_POINTS[point] * (share / share.sum())[:, None]).ravel())
    return level, weights


def matern52(x1: np.ndarray, x2: np.ndarray, lengthscale: np.ndarray, outputscale: float) -> np.ndarray:
    z1, z2 = x1 / lengthscale, x2 / lengthscale
    r2 = ((z1**2).sum(1)[:, None] + (z2**2).sum(1)[None] - 2 * z1 @ z2.T).clip(min=0.0)
    r = np.sqrt(r2)
    return outputscale * (1 + SQRT5 * r + (5.0 / 3.0) * r2) * np.exp(-SQRT5 * r)


class NumpyMMGP:
    """Arrays of a trained MMGP (see `MMGP.to_arrays`) and the predictions they make.

    `posterior` replaces the numpy GP posterior (MMGP passes its gpytorch one); the rest of the path
    (morphing, projection, decoding, uncertainty) is this class for both.
    """

    def __init__(self, arrays: dict[str, np.ndarray], posterior: Posterior | None = None):
        self.a = arrays
        self.fields = [str(f) for f in arrays["fields"]]
        self.scalars = [str(s) for s in arrays["scalars"]]
        self.scaling = str(arrays["scaling"])
        self.posterior = posterior or self.numpy_posterior
        self.morphing = morphing_method(arrays)
        # the common support: the unit disk, or for rbf the reference shape, whose own mesh is the common mesh
        self.reference = (morphing.ReferenceShape(arrays["common_disk"], arrays["common_triangles"])
                          if self.morphing == "rbf" else None)
        self._common: morphing.PointLocator | None = None

    def transform(self, field: str) -> tuple[str, float]:
        """How a field is regressed (see `decode_field`): the transform and its offset."""
        if f"{field}.transform" not in self.a:
            return "none", 0.0
        return str(self.a[f"{field}.transform"]), float(self.a[f"{field}.offset"])

    @classmethod
    def load(cls, path: str | Path) -> "NumpyMMGP":
        with np.load(path, allow_pickle=False) as f:
            return cls(dict(f))

    def save(self, path: str | Path) -> None:
        np.savez(path, **self.a)

    def numpy_posterior(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact GP posterior (Matern 5/2, one kernel per group of outputs) from the stored Cholesky factors."""
        a = self.a
        mean = np.zeros((len(x), a["alpha"].shape[1]))
        var = np.zeros_like(mean)
        factors = a["variance_factor"] if "variance_factor" in a else np.ones(len(a["noise"]))
        for g, (ls, scale, noise) in enumerate(zip(a["lengthscale"], a["outputscale"], a["noise"])):
            cols = a["group_of_output"] == g
            Ks = matern52(x, a["x_train"], ls, scale)
            mean[:, cols] = Ks @ a["alpha"][:, cols]
            v = solve_triangular(a["cholesky"][g], Ks.T, lower=True)
            var[:, cols] = (factors[g] * (np.clip(scale - (v**2).sum(0), 0.0, None) + noise))[:, None]
        return mean, var

    def _standardised_inputs(self, P, nodes, inputs, shape_coefficients):
        a = self.a
        if shape_coefficients is None:
            xy = P @ nodes
            shape_coefficients = (np.concatenate([xy[:, 0], xy[:, 1]]) - a["shape_mean"]) @ a["shape_projector"]
        shape_coefficients = np.atleast_2d(shape_coefficients)
        scalars = (gp_inputs(inputs, self.scaling) - a["input_mean"]) / a["input_std"]
        return (np.column_stack([shape_coefficients, scalars]) - a["x_mean"]) / a["x_std"], shape_coefficients.shape[1]

    def _field_percentile(self, name: str, q: float, field: np.ndarray, jacobian: np.ndarray, var: np.ndarray,
                          triangles: np.ndarray, nodes: np.ndarray) -> tuple[float, float]:
        """A percentile output read off the predicted field, corrected by the mean log ratio to the solver's
        value over the training shapes (leave-one-out predictions); its variance is the GP's carried to first
        order plus a relative scatter sized so that those leave-one-out errors have unit mean square (what the
        first-order term misses: truncation and the percentile's nonlinearity)."""
        areas = np.abs(morphing.signed_areas(nodes, triangles))
        level, weights = field_percentile(field, triangles, areas, q)
        bias, spread = float(self.a[f"{name}.log_bias"]), float(self.a[f"{name}.log_spread"])
        value = level * np.exp(bias)
        gradient = weights @ jacobian
        return float(value), float(np.sqrt(gradient**2 @ var + (value * spread) ** 2))

    def predict(self, nodes: np.ndarray, triangles: np.ndarray, inputs: np.ndarray,
                shape_coefficients: np.ndarray | None = None) -> dict[str, Any]:
        """Means and standard deviations of every field (on the given nodes) and every scalar output.
        `shape_coefficients` replace the morphed shape's (the oracle baseline gives the generator's)."""
        a = self.a
        nodes, triangles = morphing.check_mesh(nodes, triangles)
        inputs = np.asarray(inputs, float).reshape(-1)
        if inputs.shape != (3,) or not np.isfinite(inputs).all():
            raise ValueError(f"expected 3 finite scalars (load, shear, young), got {inputs}")
        loops = morphing.boundary_loops(triangles)
        disk = morphing.morph(self.morphing, nodes, triangles, loops, self.reference)
        P = morphing.PointLocator(disk, triangles, loops).matrix(a["common_disk"])
        x, n_shape = self._standardised_inputs(P, nodes, inputs, shape_coefficients)
        distance = float(np.linalg.norm(a["x_train"][:, :n_shape] - x[:, :n_shape], axis=1).min())
        mean_z, var_z = self.posterior(x)
        mean = mean_z[0] * a["y_std"] + a["y_mean"]
        var = var_z[0] * a["y_std"] ** 2
        if self._common is None:  # the common mesh is the same for every shape: search structures built once
            self._common = morphing.PointLocator(a["common_disk"], a["common_triangles"])
        Q = self._common.matrix(disk)
        limit = float(a["shape_distance_limit"])
        out: dict[str, Any] = {"fields": {}, "scalars": {}, "shape_distance": distance, "shape_distance_limit": limit}
        start, decoded = 0, {}
        published = str(a["uncertainty"]) == "monte_carlo_as_published"
        for f in self.fields:
            modes = a[f"{f}.modes"]
            k = len(modes)
            coef_var = var[start: start + k]
            residual = a[f"{f}.residual_variance"] if bool(a["truncation_variance"]) and not published else None
            # the released code decodes one draw for every sample: no field variance
            field_mean, jacobian, field_var = decode_field(Q, a[f"{f}.mean"], modes, mean[start: start + k],
                                                           0 * coef_var if published else coef_var, residual,
                                                           *self.transform(f))
            u = unit(f, inputs, self.scaling)
            out["fields"][f] = (u * field_mean, u * np.sqrt(field_var))
            decoded[f] = (u * field_mean, u * jacobian, coef_var)
            start += k
        log_scalars = bool(a["log_scalars"]) if "log_scalars" in a else False
        for j, name in enumerate(self.scalars):
            u = unit(name, inputs, self.scaling)
            m, s = float(mean[start + j]), float(np.sqrt(var[start + j]))
            if log_scalars:  # log-normal: its median, and the std to first order (s is a relative std)
                m, s = np.exp(m), np.exp(m) * s
            out["scalars"][name] = (u * m, u * s)
        if "percentile_from_field" in a and bool(a["percentile_from_field"]):
            for name, (f, q) in FIELD_PERCENTILES.items():
                out["scalars"][name] = self._field_percentile(name, q, *decoded[f], triangles, nodes)
        if distance > limit:
            warnings.warn(f"this shape is far outside the training shapes: distance {distance:.3g} in standardised "
                          f"shape space, beyond {limit:.3g} (3x the 99th percentile of nearest-neighbour "
                          "distances between training shapes); treat the prediction as an extrapolation",
                          stacklevel=2)
        return out

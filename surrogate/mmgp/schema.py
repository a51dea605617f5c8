"""The mmgp case file: every key, its default, its allowed range."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator

from surrogate.core.case import DataSection, Section
from surrogate.core.methods import MethodsCase, MethodSpec, baselines_from

Range = tuple[float, float]
# the fields and scalar outputs of surrogate.mmgp.data.FIELDS and fem.SCALAR_OUTPUTS (a test keeps them equal)
Output = Literal["u1", "u2", "von_mises", "von_mises_p995", "top_displacement", "compliance"]


def _ordered(value: Range, what: str) -> Range:
    if value[0] > value[1]:
        raise ValueError(f"{what} range must be [low, high] with low <= high, got {list(value)}")
    return value


class GeometrySpec(Section):
    definition: str = Field("meshes/specimen2d.yaml", description="reference geometry file (relative to the repo)")
    mesh_size: Range | None = Field(None, description="override of the gmsh size range, e.g. [0.08, 0.1] for smoke")

    @field_validator("mesh_size")
    @classmethod
    def _size(cls, v):
        if v is not None:
            _ordered(v, "mesh_size")
            if v[0] < 0.005:
                raise ValueError("mesh_size below 0.005 gives more than 100k nodes; allowed: >= 0.005")
        return v


class PhysicsSpec(Section):
    model: Literal["linear", "neo_hookean"] = "neo_hookean"
    load: Range = Field((25.0, 35.0), description="top normal traction, MPa (uniform draw)")
    shear: Range = Field((-2.0, 2.0), description="top tangential traction, MPa")
    young: Range = Field((80.0, 120.0), description="Young's modulus, MPa")
    poisson: float = Field(0.35, gt=0.0, lt=0.5)
    load_steps: int = Field(4, ge=1, le=100)
    newton_tol: float = Field(1e-10, gt=0, lt=1e-2)

    @field_validator("load", "shear", "young")
    @classmethod
    def _range(cls, v, info):
        return _ordered(v, info.field_name)

    @field_validator("young")
    @classmethod
    def _positive(cls, v):
        if v[0] <= 0:
            raise ValueError("Young's modulus must be positive")
        return v


class DataSpec(DataSection):
    n_train: int = Field(500, ge=2, le=100_000)
    n_test: int = Field(200, ge=1, le=100_000)
    n_ood: int = Field(4, ge=0, le=10_000, description="out-of-range shapes (another notch family)")


class MMGPSpec(MethodSpec):
    """One MMGP variant. The defaults are the authors' Tensile2d settings."""

    kind: Literal["mmgp"]
    morphing: Literal["floater", "floater_anchored", "mean_value_anchored", "rbf"] = Field(
        "floater", description="floater: uniform-weight Tutte map onto the unit disk, arc length from the min-x "
        "node (authors); floater_anchored: the four corners pinned to fixed angles, arc length between them; "
        "mean_value_anchored: the same boundary, interior by Floater's mean value weights; rbf: onto a reference "
        "training shape, each boundary loop onto its own by arc length (corners pinned), the interior by "
        "thin-plate splines: for shapes with holes, which the disk cannot take")
    shape_modes: int = Field(8, ge=1, le=500, description="shape POD coefficients the GPs read")
    shape_modes_per_output: dict[Output, Annotated[int, Field(ge=1, le=500)]] = Field(
        {}, description="another count for some outputs, e.g. {von_mises: 123}: a field's GPs (and a percentile "
        "read off it) take their own number of leading shape coefficients; the shape POD keeps the largest count")
    field_modes: int = Field(8, ge=1, le=500)
    energy: float | None = Field(None, gt=0, lt=1, description="if set, keep the fewest modes (at most the "
                                 "counts above) whose POD energy reaches this fraction")
    center: bool = Field(False, description="subtract the training mean before POD")
    scaling: Literal["none", "hyperelastic", "hyperelastic_traction"] = Field(
        "none", description="hyperelastic: GP inputs load/E and shear/E, stress-like outputs divided by E "
        "(exact invariants of a strain energy proportional to E); hyperelastic_traction: the same, but stresses "
        "divided by the traction magnitude |t|, which removes their leading linear dependence on the load")
    von_mises_transform: Literal["none", "sqrt", "log"] = Field(
        "none", description="how the non-negative von Mises field is regressed: as it is, through its square root, "
        "or through log(vm + c), c = log_offset times its training mean (POD and GPs on the transformed field, "
        "decoded with the mean and variance of the transformed Gaussian)")
    log_offset: float = Field(0.01, gt=0, le=10, description="c of the log transform, relative to the field's mean")
    kernel: Literal["shared_per_field", "per_output", "per_leading_mode"] = Field(
        "shared_per_field", description="shared_per_field: a field's modes share one kernel and noise (authors); "
        "per_output: every mode and scalar its own; per_leading_mode: the first `own_kernel_modes` modes of a "
        "field their own, the rest sharing one per `tail_group` consecutive modes")
    own_kernel_modes: int = Field(16, ge=0, le=500, description="per_leading_mode: modes with their own kernel")
    tail_group: int = Field(8, ge=1, le=500, description="per_leading_mode: later modes sharing one kernel")
    log_scalars: bool = Field(False, description="regress the log of the (positive) scalar outputs")
    percentile_from_field: bool = Field(False, description="read percentile outputs (von_mises_p995) off the "
                                        "predicted field instead of their GP, calibrated by leave-one-out "
                                        "predictions on the training shapes")
    restarts: int = Field(10, ge=1, le=100)
    max_iter: int = Field(1000, ge=1, le=10_000, description="L-BFGS iterations")
    noise_floor: float = Field(1e-8, gt=0, lt=1)
    truncation_variance: bool = Field(False, description="add the POD truncation error to the field variance")
    loo_calibration: bool = Field(False, description="scale each GP's predictive variance so that its closed-form "
                                  "leave-one-out residuals on the training set have unit variance")
    scalar_cv_folds: int = Field(0, ge=0, le=100, description="if >= 2, the scalar GPs' variance factor (and the "
                                 "calibration of percentiles read off a field) comes from K-fold cross-validation "
                                 "with hyperparameters refitted on each fold instead of the closed-form "
                                 "leave-one-out, which reuses the hyperparameters fitted on all shapes and so "
                                 "underestimates the error on new ones")
    uncertainty: Literal["closed_form", "monte_carlo_as_published"] = Field(
        "closed_form", description="monte_carlo_as_published reproduces the authors' field sampling, whose "
        "variance is zero")

    @field_validator("scalar_cv_folds")
    @classmethod
    def _folds(cls, v):
        if v == 1:
            raise ValueError("one fold leaves no shape out; allowed: 0 (closed-form leave-one-out) or >= 2")
        return v


class OracleGPSpec(MethodSpec):
    """A GP on the generator's true shape parameters and the scalar inputs (an upper reference)."""

    kind: Literal["oracle_gp"]
    field_modes: int | None = Field(None, ge=1, le=500, description="default: the surrogate's")
    restarts: int | None = Field(None, ge=1, le=100, description="default: the surrogate's")
    max_iter: int = Field(1000, ge=1, le=10_000)


class GNNSpec(MethodSpec):
    """A MeshGraphNets-style encode-process-decode GNN on the raw meshes."""

    kind: Literal["gnn"]
    hidden: int = Field(64, ge=4, le=1024)
    layers: int = Field(8, ge=1, le=64)
    lr: float = Field(1e-3, gt=0, le=1)
    time_budget: float | None = Field(None, gt=0, description="training seconds; default: MMGP's training time")
    max_epochs: int = Field(10_000, ge=1)
    batch_size: int = Field(1, ge=1, description="meshes per gradient step (a multiple of the torchrun world size)")


Method = Annotated[Union[MMGPSpec, OracleGPSpec, GNNSpec], Field(discriminator="kind")]

SHORTHANDS = {
    "mmgp_faithful": {"kind": "mmgp", "name": "mmgp_faithful", "uncertainty": "monte_carlo_as_published"},
    "oracle_gp": {"kind": "oracle_gp"},
    "gnn": {"kind": "gnn"},
}


KINDS = "mmgp | oracle_gp | gnn"


class EvaluateSpec(Section):
    baselines: Annotated[list[Method], baselines_from(SHORTHANDS, KINDS)] = Field(default_factory=list)
    coverage_levels: list[Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: [0.9, 0.95])
    figures: int = Field(3, ge=0, le=20, description="test shapes drawn")
    cost_samples: int = Field(5, ge=1, description="new shapes timed: FEM against the surrogate")


class MMGPCase(MethodsCase):
    method_shorthands = SHORTHANDS
    method_kinds = KINDS
    pipeline: Literal["mmgp"]
    geometry: GeometrySpec = Field(default_factory=GeometrySpec)
    physics: PhysicsSpec = Field(default_factory=PhysicsSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    surrogate: MMGPSpec = Field(default_factory=lambda: MMGPSpec(kind="mmgp"))
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

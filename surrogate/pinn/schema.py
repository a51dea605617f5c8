"""The pinn case file: every key, its default, its allowed range."""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from surrogate.core.case import Case, DataSection, Section
from surrogate.core.methods import check_unique
from surrogate.pinn.pdes import PROBLEMS, make_problem

PDEName = Literal["helmholtz", "klein_gordon", "flow_mixing", "burgers", "allen_cahn"]


class PDESpec(Section):
    name: PDEName
    params: dict[str, float] = Field(default_factory=dict, description="e.g. a1, a2, k (helmholtz); nu (burgers)")
    domain: dict[str, tuple[float, float]] = Field(default_factory=dict, description="coordinate -> [min, max]")

    @model_validator(mode="after")
    def _builds(self):
        make_problem(self.name, self.params, self.domain)  # raises ValueError naming the bad key
        return self


class DataSpec(DataSection):
    test_points: dict[str, Annotated[int, Field(ge=2, le=100_000)]] = Field(
        default_factory=dict, description="evaluation grid points per coordinate; defaults per PDE")
    curve_points: int = Field(20_000, ge=1, description="test points monitored during training")
    quadrature_nodes: int = Field(200, ge=10, le=2000, description="Gauss-Hermite nodes (burgers)")
    modes: int = Field(4096, ge=16, description="Fourier modes of the reference solver (allen_cahn)")
    dt: float = Field(1e-3, gt=0, le=0.1, description="ETDRK4 step of the reference solver (allen_cahn)")


class PIGSpec(Section):
    kind: Literal["pig"] = "pig"
    n_gaussians: int = Field(200, ge=1, le=100_000, description="Gaussians per feature channel")
    channels: int = Field(4, ge=1, le=64, description="feature channels k, each with its own Gaussians")
    hidden: list[Annotated[int, Field(ge=1, le=1024)]] = Field(default_factory=lambda: [16])
    sigma_init: Union[Annotated[float, Field(gt=0)], list[Annotated[float, Field(gt=0)]]] = Field(
        0.1, description="initial scale in rescaled input units: one value, or one per coordinate")
    weight_std: float = Field(0.01, gt=0)
    input_range: tuple[float, float] = Field((-1.0, 1.0), description="interval every input is mapped onto")
    covariance: Literal["diagonal", "full"] = "diagonal"
    derivatives: Literal["closed_form", "autograd"] = "closed_form"
    dtype: Literal["float64", "float32"] = "float64"
    local_cutoff: float | None = Field(
        None, gt=0, description="evaluate each Gaussian only within this many scales of its mean (diagonal only)")
    sigma_min: float | None = Field(
        None, gt=0, description="smallest scale in rescaled input units: sqrt(sigma^2 + sigma_min^2) is used")

    @model_validator(mode="after")
    def _local_needs_diagonal(self):
        if self.local_cutoff is not None and self.covariance != "diagonal":
            raise ValueError("local_cutoff works with covariance 'diagonal' only")
        return self

    @field_validator("input_range")
    @classmethod
    def _range(cls, v):
        if not v[0] < v[1]:
            raise ValueError("needs min < max, e.g. [0, 2]")
        return v


class PhaseSpec(Section):
    optimizer: Literal["adam", "lbfgs"]
    steps: int = Field(ge=0, le=10_000_000)
    lr: float = Field(1e-2, gt=0, le=10.0)
    decay_rate: float = Field(1.0, gt=0, le=1.0, description="Adam: lr * decay_rate ** (step / decay_steps)")
    decay_steps: int = Field(1000, ge=1)
    resample_every: int = Field(0, ge=0, description="steps between new collocation points; 0 = fixed")
    max_iter: int = Field(20, ge=1, description="L-BFGS iterations per step")
    history: int = Field(100, ge=1, description="L-BFGS history size")
    until: float | None = Field(
        None, gt=0, le=1, description="end the phase once this share of train.time_limit_s is spent, leaving the "
                                      "rest to the phases after it; null = run until its steps or the budget end")
    n_collocation: int | None = Field(None, ge=1, description="interior points of this phase; default "
                                                              "train.n_collocation")
    dtype: Literal["float32", "float64"] | None = Field(
        None, description="precision of this phase (a float32 step cost a third to a half of a float64 one here); "
                          "default surrogate.dtype")


class AdaptiveSampling(Section):
    """Residual-based adaptive sampling (RAR-D, Wu et al. 2023): each new set of interior points is drawn
    from a uniform pool of `pool` x n_collocation points with probability |r|^power / mean(|r|^power) + offset,
    r the residual of the current model."""
    pool: int = Field(8, ge=2, le=100, description="candidate points per kept point")
    power: float = Field(1.0, gt=0, le=4.0)
    offset: float = Field(1.0, ge=0, description="weight of the uniform part; 0 = residual alone")


class Relocation(Section):
    """Every `every` resamplings, the `share` of each channel's Gaussians with the smallest |weight| are
    moved to points drawn with probability r^2 from a uniform pool of `pool` x n_collocation points, r the
    residual, with weight 0 (the field loses only their small old contributions) and the initial scale;
    the optimiser starts afresh. Learned means barely travel: in the flow-mixing default 6% of them ended
    within r < 1, where 5% started and nearly all of the error was."""
    every: int = Field(5, ge=1, description="resamplings between relocations")
    share: float = Field(0.05, gt=0, le=0.5, description="share of each channel's Gaussians moved each time")
    pool: int = Field(4, ge=1, le=100, description="candidate points per collocation point")


class LossWeights(Section):
    residual: float = Field(1.0, ge=0)
    initial: float = Field(1.0, ge=0)
    boundary: float = Field(1.0, ge=0)


class TrainSpec(Section):
    n_collocation: int = Field(4096, ge=1, description="interior points")
    n_initial: int = Field(256, ge=1, description="points at t = t0 (time-dependent PDEs)")
    n_boundary: int = Field(1024, ge=1, description="points on the spatial boundary, all faces together")
    weights: LossWeights = Field(default_factory=LossWeights)
    causal_chunks: int = Field(0, ge=0, le=1000, description="time chunks of the causal weighting; 0 = off")
    causal_eps: float = Field(1.0, ge=0)
    phases: list[PhaseSpec] = Field(default_factory=lambda: [PhaseSpec(optimizer="adam", steps=1000)], min_length=1)
    steps_per_epoch: int = Field(100, ge=1, description="optimiser steps between checkpoints")
    time_limit_s: float | None = Field(None, gt=0,
                                       description="budget of all phases, CPU seconds of the training process")
    adaptive: AdaptiveSampling | None = Field(
        None, description="residual-based choice of the interior points at each resampling; null = uniform")
    relocate: Relocation | None = Field(
        None, description="move the least-used Gaussians to where the residual is large; null = never")
    chunk_points: int | None = Field(
        None, ge=1, description="points per backward pass (bounds memory); default: as many as keep one "
                                "(channels, points, Gaussians) array of the embedding within 8 MiB")

    @model_validator(mode="after")
    def _phases_fit(self):
        untils = [(i, p.until) for i, p in enumerate(self.phases) if p.until is not None]
        if untils and self.time_limit_s is None:
            raise ValueError(f"phases.{untils[0][0]}.until = {untils[0][1]:g} is a share of time_limit_s, "
                             "which is not set; set the budget or remove `until`")
        for (i, a), (j, b) in zip(untils, untils[1:]):
            if b <= a:
                raise ValueError(f"phases.{j}.until = {b:g} must be larger than phases.{i}.until = {a:g}: "
                                 "phases run one after the other")
        if self.adaptive is None and self.relocate is None:
            return self
        option = "train.adaptive" if self.adaptive is not None else "train.relocate"
        for i, phase in enumerate(self.phases):
            every = phase.resample_every  # 0: one fixed set of points, drawn uniformly
            if every and self.steps_per_epoch % every:
                raise ValueError(f"{option}: phases.{i}.resample_every = {every} must divide "
                                 f"steps_per_epoch = {self.steps_per_epoch}, so that a resumed run draws its points "
                                 "from the same model as the interrupted one")
        return self


class DeepXDESpec(Section):
    kind: Literal["deepxde_pinn"] = "deepxde_pinn"
    name: str | None = Field(None, pattern=r"^[A-Za-z][\w\-]*$", description="defaults to 'pinn'")
    width: int = Field(64, ge=1, le=4096)
    depth: int = Field(4, ge=1, le=32, description="hidden layers")
    activation: Literal["tanh", "sin"] = "tanh"
    lr: float = Field(1e-3, gt=0, le=1.0)
    adam_steps: int = Field(2000, ge=0)
    lbfgs_steps: int = Field(500, ge=0, description="L-BFGS steps of up to 20 iterations each")
    adam_time_fraction: float = Field(
        0.5, gt=0, le=1, description="share of the time budget Adam may use, so L-BFGS always gets the rest")
    n_domain: int = Field(4096, ge=1)
    n_boundary: int = Field(512, ge=1)
    n_initial: int = Field(256, ge=1)
    time_limit: Union[Literal["match"], Annotated[float, Field(gt=0)], None] = Field(
        "match", description="'match' = the PIG's training time; seconds; or null for none")

    @property
    def label(self) -> str:
        return self.name or "pinn"


class EvaluateSpec(Section):
    baselines: list[DeepXDESpec] = Field(default_factory=list)


class PINNCase(Case):
    pipeline: Literal["pinn"]
    pde: PDESpec
    data: DataSpec = Field(default_factory=DataSpec)
    surrogate: PIGSpec = Field(default_factory=PIGSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _consistent(self):
        check_unique(["pig", *[b.label for b in self.evaluate.baselines]])
        coords = PROBLEMS[self.pde.name].__dataclass_fields__["coords"].default
        sigma = self.surrogate.sigma_init
        if isinstance(sigma, list) and len(sigma) != len(coords):
            raise ValueError(f"surrogate.sigma_init: {len(sigma)} values for {len(coords)} coordinates "
                             f"({', '.join(coords)}); give one value or one per coordinate")
        bad = sorted(set(self.data.test_points) - set(coords))
        if bad:
            raise ValueError(f"data.test_points: unknown coordinate(s) {bad}; allowed: {', '.join(coords)}")
        return self

    def problem(self):
        return make_problem(self.pde.name, self.pde.params, self.pde.domain)

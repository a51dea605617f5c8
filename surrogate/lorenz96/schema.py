"""The lorenz96 case file: every key, its default, its allowed range."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, model_validator

from surrogate.core.case import DataSection, Section
from surrogate.core.methods import MethodsCase, MethodSpec, baselines_from
from surrogate.lorenz96.data import HISTORY


class SolverSpec(Section):
    K: int = Field(8, ge=4, le=8192, description="slow variables on the ring")
    J: int = Field(32, ge=3, le=1024, description="fast variables per slow one")
    F: float = Field(20.0, description="forcing")
    h: float = Field(1.0, ge=0, description="coupling strength")
    b: float = Field(10.0, gt=0, description="amplitude ratio of slow to fast")
    c: float = Field(10.0, gt=0, description="time-scale ratio of fast to slow")
    dt: float = Field(0.001, gt=0, le=0.05, description="RK4 step of the resolved model")
    y_periodicity: Literal["ring", "sector"] = "ring"


class DataSpec(DataSection):
    sample_every: int = Field(5, ge=1, description="solver steps between samples; one coarse step")
    spinup_mtu: float = Field(5.0, ge=0, description="warm-up onto the attractor, discarded")
    n_train: int = Field(100, ge=1, description="training trajectories")
    train_mtu: float = Field(20.0, gt=0, description="length of each training trajectory")
    n_test: int = Field(100, ge=1, description="held-out trajectories for forecasts")
    forecasts_per_trajectory: int = Field(5, ge=1)
    forecast_mtu: float = Field(2.0, gt=0, description="length of each forecast")
    climate_runs: int = Field(50, ge=2, description="free runs per truth ensemble (two ensembles)")
    climate_mtu: float = Field(20.0, gt=0, description="length of each free run")
    climate_record_mtu: float = Field(0.05, gt=0, description="output interval of free runs")
    transfer_K: list[Annotated[int, Field(ge=4, le=8192)]] = Field(default_factory=list)
    transfer_n_train: int = Field(20, ge=1)
    transfer_n_test: int = Field(10, ge=1)
    transfer_mtu: float = Field(10.0, gt=0)


class CoarseSpec(Section):
    scheme: Literal["rk4", "euler"] = "rk4"
    target: Literal["coupling", "residual"] = Field(
        "coupling", description="coupling: -(hc/b) sum_j Y; residual: (X_{t+1}-X_t)/dt - N(X_t), with euler")

    @model_validator(mode="after")
    def _residual_needs_euler(self):
        if self.target == "residual" and self.scheme != "euler":
            raise ValueError("target 'residual' is the forward-Euler residual and needs scheme 'euler'")
        return self


class TrainSpec(Section):
    epochs: int = Field(20, ge=0, le=100_000)
    lr: float = Field(1e-3, gt=0, le=1.0)
    batch_size: int = Field(256, ge=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    batching: Literal["shuffled", "contiguous"] = Field(
        "shuffled", description="contiguous: each batch is batch_size consecutive steps of one trajectory, "
        "in order, as the MNO paper's loader does")
    step_size: int = Field(20, ge=1, description="StepLR period (scheduler: step)")
    gamma: float = Field(0.9, gt=0, le=1, description="StepLR factor (scheduler: step)")
    weight_decay: float = Field(0.0, ge=0)
    rollout_steps: int = Field(0, ge=0, le=500, description="coarse steps unrolled in fine-tuning; 0 = offline only")
    rollout_epochs: int = Field(5, ge=0)
    rollout_lr: float = Field(2e-4, gt=0, le=1.0)
    rollout_batch_size: int = Field(64, ge=1)
    rollout_windows: int = Field(4000, ge=1, description="windows drawn from the training trajectories")


class TrainOverride(Section):
    """Keys of `train` that one method changes for itself."""

    epochs: int | None = Field(None, ge=0, le=100_000)
    lr: float | None = Field(None, gt=0, le=1.0)
    batch_size: int | None = Field(None, ge=1)
    scheduler: Literal["cosine", "step", "none"] | None = None
    batching: Literal["shuffled", "contiguous"] | None = None
    step_size: int | None = Field(None, ge=1)
    gamma: float | None = Field(None, gt=0, le=1)
    weight_decay: float | None = Field(None, ge=0)
    rollout_steps: int | None = Field(None, ge=0, le=500)
    rollout_epochs: int | None = Field(None, ge=0)
    rollout_lr: float | None = Field(None, gt=0, le=1.0)
    rollout_batch_size: int | None = Field(None, ge=1)
    rollout_windows: int | None = Field(None, ge=1)


class _MethodBase(MethodSpec):
    train: TrainOverride | None = None

    def init_args(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "train", "kind"})


class NullSpec(_MethodBase):
    kind: Literal["null"]


class ClimatologySpec(_MethodBase):
    kind: Literal["climatology"]


class PolynomialSpec(_MethodBase):
    kind: Literal["polynomial"]
    degree: int = Field(3, ge=1, le=8)
    ar1: bool = False


class LocalMLPSpec(_MethodBase):
    kind: Literal["local_mlp"]
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [32, 32])
    normalise: bool = True


class FNOSpec(_MethodBase):
    kind: Literal["mno", "pure_fno"]
    modes: int = Field(8, ge=1, le=4096, description="Fourier modes kept (rfft keeps modes//2 + 1)")
    width: int = Field(64, ge=1, le=1024)
    layers: int = Field(4, ge=1, le=16)
    normalise: bool = True


class MemoryMNOSpec(_MethodBase):
    kind: Literal["mno_memory"]
    modes: int = Field(8, ge=1, le=4096, description="Fourier modes kept (rfft keeps modes//2 + 1)")
    width: int = Field(64, ge=1, le=1024)
    layers: int = Field(4, ge=1, le=16)
    normalise: bool = True
    memory: int = Field(8, ge=1, le=HISTORY, description="past closure values (lags) the closure uses")


AnyMethod = Annotated[
    Union[NullSpec, ClimatologySpec, PolynomialSpec, LocalMLPSpec, FNOSpec, MemoryMNOSpec],
    Field(discriminator="kind"),
]

SHORTHANDS: dict[str, dict[str, Any]] = {
    "null": {"kind": "null"},
    "climatology": {"kind": "climatology"},
    "linear": {"kind": "polynomial", "degree": 1, "name": "linear"},
    "cubic": {"kind": "polynomial", "degree": 3, "name": "cubic"},
    "quartic_ar1": {"kind": "polynomial", "degree": 4, "ar1": True, "name": "quartic_ar1"},
    "local_mlp": {"kind": "local_mlp"},
    "mno": {"kind": "mno"},
    "mno_memory": {"kind": "mno_memory"},
    "pure_fno": {"kind": "pure_fno"},
}


KINDS = "null | climatology | polynomial | local_mlp | mno | mno_memory | pure_fno"


class EvaluateSpec(Section):
    baselines: Annotated[list[AnyMethod], baselines_from(SHORTHANDS, KINDS)] = Field(default_factory=list)
    leads_mtu: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [0.5, 1.0, 2.0])
    mean_rmse_mtu: float = Field(1.0, gt=0, description="the MNO paper's mean RMSE over the first MTU")
    headline: str = "forecast_rmse_1mtu"
    bootstrap: int = Field(1000, ge=10)
    bound: float = Field(1000.0, gt=0, description="|X| beyond which a free run counts as blown up")
    hist_range: tuple[float, float] = (-15.0, 25.0)
    hist_bins: int = Field(100, ge=5)
    acf_max_lag_mtu: float = Field(2.0, gt=0)
    cost: list[tuple[Annotated[int, Field(ge=4)], Annotated[int, Field(ge=3)]]] = Field(
        default_factory=list, description="(K, J) pairs timed: hybrid against the full solver")
    cost_ensemble: int = Field(32, ge=1)
    cost_mtu: float = Field(0.25, gt=0)
    cost_methods: list[str] = Field(default_factory=list,
                                    description="methods timed beside the surrogate in the cost comparison")
    sample_forecasts: int = Field(4, ge=1)
    climate_skip: list[str] = Field(default_factory=list, description="methods left out of the free runs")

class Lorenz96Case(MethodsCase):
    method_shorthands = SHORTHANDS
    method_kinds = KINDS
    pipeline: Literal["lorenz96"]
    solver: SolverSpec = Field(default_factory=SolverSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    coarse: CoarseSpec = Field(default_factory=CoarseSpec)
    surrogate: AnyMethod = Field(default_factory=lambda: FNOSpec(kind="mno"))
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _consistent(self):
        labels = [m.label for m in self.methods]
        too_long = [x for x in self.evaluate.leads_mtu if x > self.data.forecast_mtu + 1e-9]
        if too_long:
            raise ValueError(f"evaluate.leads_mtu {too_long} exceed data.forecast_mtu={self.data.forecast_mtu}")
        for key in ("climate_skip", "cost_methods"):
            unknown = sorted(set(getattr(self.evaluate, key)) - set(labels))
            if unknown:
                raise ValueError(f"evaluate.{key} names no method: {', '.join(unknown)}; "
                                 f"methods: {', '.join(labels)}")
        memory = [m.label for m in self.methods if m.kind == "mno_memory"]
        if memory and self.coarse.target != "residual":
            raise ValueError(f"{', '.join(memory)}: a closure with memory needs coarse: {{scheme: euler, "
                             "target: residual}, so that past closure values follow from past states")
        if self.evaluate.mean_rmse_mtu > self.data.forecast_mtu + 1e-9:
            raise ValueError("evaluate.mean_rmse_mtu exceeds data.forecast_mtu")
        return self

    @property
    def coarse_dt(self) -> float:
        return self.solver.dt * self.data.sample_every

    def steps(self, mtu: float) -> int:
        return max(1, int(round(mtu / self.coarse_dt)))

    def train_for(self, method) -> TrainSpec:
        if method.train is None:
            return self.train
        changes = method.train.model_dump(exclude_none=True)
        return self.train.model_copy(update=changes)

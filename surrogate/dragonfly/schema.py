"""The dragonfly case file: every key, its default, its allowed range."""
from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from surrogate.core.case import DataSection, Section
from surrogate.core.methods import MethodsCase, MethodSpec, baselines_from

from .simulator import ROUTINGS
from .topology import PRESETS
from .workloads import APPS


def _preset(value: str) -> str:
    if value not in PRESETS:
        raise ValueError(f"unknown Dragonfly preset {value!r}; allowed: {', '.join(PRESETS)}")
    return value


class SimulatorSpec(Section):
    window_us: float = Field(20.0, gt=0, le=10_000, description="counting window of the port counters")
    dt_ns: float = Field(500.0, gt=0, le=10_000, description="time step of the packet model")
    routing: Literal[ROUTINGS] = "par"  # type: ignore[valid-type]
    jitter: float = Field(0.05, ge=0, le=1, description="coefficient of variation of each rank's compute time")

    @model_validator(mode="after")
    def _window_multiple(self):
        steps = self.window_us * 1e3 / self.dt_ns
        if abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"window_us ({self.window_us}) must be a multiple of dt_ns ({self.dt_ns} ns)")
        return self


class DataSpec(DataSection):
    train: dict[str, Annotated[int, Field(ge=1, le=10_000)]] = Field(
        default_factory=lambda: {"df72": 16, "df342": 4}, description="training scenarios per preset")
    validation_fraction: float = Field(0.2, ge=0, lt=1, description="training scenarios kept to pick the epoch")
    calibration: dict[str, Annotated[int, Field(ge=0, le=10_000)]] = Field(
        default_factory=dict, description="scenarios per preset drawn like test_seeds for the conformal interval "
                                          "offsets only (none: offsets from the validation scenarios)")
    iterations: int = Field(24, ge=4, le=10_000, description="iterations of the target job per scenario")
    steps: int = Field(6, ge=1, le=64, description="past iterations the forecasters see")
    n_test_seeds: int = Field(6, ge=1)
    n_test_unseen: int = Field(6, ge=1)
    transfer_preset: str = "df1056"
    n_transfer: int = Field(2, ge=0)
    transfer_iterations: int = Field(14, ge=4, le=10_000, description="target iterations of transfer scenarios")
    n_jitter: int = Field(3, ge=0, description="test scenarios re-run with another jitter seed (error floor)")
    jitter_runs: int = Field(1, ge=1, le=16, description="re-runs of each of those scenarios, each its own jitter seed")
    held_out_app: Literal[APPS] = "io"  # type: ignore[valid-type]
    max_corunners: int = Field(2, ge=1, le=3)
    apps: list[Literal[APPS]] | None = Field(  # type: ignore[valid-type]
        None, description="workloads of the training scenarios (default: all but held_out_app)")

    @field_validator("train", "calibration")
    @classmethod
    def _presets(cls, value: dict[str, int], info) -> dict[str, int]:
        if not value and info.field_name == "train":
            raise ValueError(f"name at least one training preset; allowed: {', '.join(PRESETS)}")
        for name in value:
            _preset(name)
        return value

    @field_validator("transfer_preset")
    @classmethod
    def _transfer(cls, value: str) -> str:
        return _preset(value)

    @model_validator(mode="after")
    def _enough(self):
        if self.iterations < self.steps + 2:
            raise ValueError(f"iterations ({self.iterations}) must be at least steps + 2 = {self.steps + 2}: "
                             "iteration 0 is skipped and one iteration is the forecast target")
        if self.transfer_iterations < self.steps + 2:
            raise ValueError(f"transfer_iterations ({self.transfer_iterations}) must be at least steps + 2")
        if self.n_jitter > self.n_test_seeds:
            raise ValueError(f"n_jitter ({self.n_jitter}) cannot exceed n_test_seeds ({self.n_test_seeds})")
        return self


class TrainSpec(Section):
    epochs: int = Field(60, ge=0, le=100_000)
    lr: float = Field(2e-3, gt=0, le=1.0)
    batch_size: int = Field(32, ge=1)
    weight_decay: float = Field(1e-4, ge=0)


class TrainOverride(Section):
    epochs: int | None = Field(None, ge=0, le=100_000)
    lr: float | None = Field(None, gt=0, le=1.0)
    batch_size: int | None = Field(None, ge=1)
    weight_decay: float | None = Field(None, ge=0)


class _MethodBase(MethodSpec):
    train: TrainOverride | None = None

    def init_args(self) -> dict[str, Any]:
        return self.model_dump(exclude={"name", "train", "kind"})


class LastSpec(_MethodBase):
    kind: Literal["last"]


class MovingAverageSpec(_MethodBase):
    kind: Literal["moving_average"]
    window: int = Field(4, ge=1, le=64)


class ArimaSpec(_MethodBase):
    kind: Literal["arima"]
    order: tuple[Annotated[int, Field(ge=0, le=5)], Annotated[int, Field(ge=0, le=2)],
                 Annotated[int, Field(ge=0, le=5)]] = (1, 0, 0)


class TreeSpec(_MethodBase):
    kind: Literal["gbt"]
    max_iter: int = Field(200, ge=1, le=10_000)
    learning_rate: float = Field(0.05, gt=0, le=1)
    max_leaf_nodes: int = Field(15, ge=2, le=1024)


class NeuralSpec(_MethodBase):
    kind: Literal["smart", "gnn_only", "transformer_only", "lstm", "lstm_feat"]
    d_model: int = Field(32, ge=4, le=1024)
    gnn_hidden: int = Field(32, ge=4, le=1024)
    gnn_layers: int = Field(2, ge=1, le=8)
    layers: int = Field(2, ge=1, le=12, description="transformer blocks or LSTM layers")
    heads: int = Field(2, ge=1, le=16)
    dropout: float = Field(0.0, ge=0, lt=1)
    pretrained: str | None = Field(None, description="local state dict (weights_only) for the transformer")
    anchor: int | None = Field(None, ge=1, le=64, description="the forecast scales the geometric mean of the last "
                                                              "`anchor` runtimes (default: all data.steps)")
    members: int = Field(1, ge=1, le=32, description="forecasters trained from different seeds, quantiles averaged")
    init: Literal["anchor", "random"] = Field(
        "anchor", description="anchor: the output weights start at zero and the biases at the training targets' "
                              "quantiles, so the untrained forecaster is a moving average with residual intervals; "
                              "random: PyTorch's default initialisation")

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        return self

    def init_args(self) -> dict[str, Any]:
        out = super().init_args()
        if out.get("pretrained") is None:
            out.pop("pretrained", None)
        return out


AnyMethod = Annotated[Union[LastSpec, MovingAverageSpec, ArimaSpec, TreeSpec, NeuralSpec],
                      Field(discriminator="kind")]
KINDS = "last | moving_average | arima | gbt | smart | gnn_only | transformer_only | lstm | lstm_feat"
SHORTHANDS: dict[str, dict[str, Any]] = {
    "last": {"kind": "last"}, "moving_average": {"kind": "moving_average"}, "arima": {"kind": "arima"},
    "gbt": {"kind": "gbt"}, "smart": {"kind": "smart"}, "gnn_only": {"kind": "gnn_only"},
    "transformer_only": {"kind": "transformer_only"}, "lstm": {"kind": "lstm"}, "lstm_feat": {"kind": "lstm_feat"},
}


class HybridSpec(Section):
    enabled: bool = True
    preset: str = "df72"
    iterations: int = Field(60, ge=4, le=100_000, description="iterations of the target job in the hybrid scenario")
    target: Literal[APPS] = "milc"  # type: ignore[valid-type]
    corunners: list[Literal[APPS]] = Field(default_factory=lambda: ["nekbone", "cosmoflow"])  # type: ignore
    warmup: int = Field(8, ge=1, description="packet-level iterations before the first fast-forward")
    recheck: int = Field(2, ge=1, description="packet-level iterations after each surrogate stretch")
    max_surrogate: int = Field(20, ge=1, description="iterations fast-forwarded before a packet-level re-check")
    width_thresholds: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [0.1, 0.2, 0.4], description="relative 80% interval width that stops fast-forward")
    drift_threshold: float = Field(0.3, gt=0, description="relative change of co-runner traffic that stops it")
    tune_steps: int = Field(3, ge=0, le=1000, description="online tuning steps at each switch to surrogate mode")
    settle: int = Field(1, ge=0, description="packet-level iterations after each return that the forecaster "
                                             "does not see (co-runners restart in step)")
    seed: int = Field(7, ge=0)

    @field_validator("preset")
    @classmethod
    def _p(cls, value: str) -> str:
        return _preset(value)


class EvaluateSpec(Section):
    baselines: Annotated[list[AnyMethod], baselines_from(SHORTHANDS, KINDS)] = Field(default_factory=list)
    latency_samples: int = Field(20, ge=1)
    hybrid: HybridSpec = Field(default_factory=HybridSpec)


class DragonflyCase(MethodsCase):
    method_shorthands = SHORTHANDS
    method_kinds = KINDS
    pipeline: Literal["dragonfly"]
    simulator: SimulatorSpec = Field(default_factory=SimulatorSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    surrogate: AnyMethod = Field(default_factory=lambda: NeuralSpec(kind="smart"))
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _hybrid_needs_neural(self):
        if self.evaluate.hybrid.enabled and self.evaluate.hybrid.warmup < self.data.steps:
            raise ValueError(f"evaluate.hybrid.warmup ({self.evaluate.hybrid.warmup}) must be at least "
                             f"data.steps ({self.data.steps}) so that the first forecast has its window")
        return self

    def train_for(self, method) -> TrainSpec:
        if method.train is None:
            return self.train
        return self.train.model_copy(update=method.train.model_dump(exclude_none=True))

"""The PROSE case file: every key, its default, its allowed range."""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from surrogate.core.case import Case, Section
from surrogate.prose.odes import FAMILIES, N_OBSERVED, N_TIMES

FamilyName = Literal[tuple(FAMILIES)]  # type: ignore[valid-type]
Fraction = Annotated[float, Field(ge=0, le=0.5)]


class DataSpec(Section):
    families: list[FamilyName] = Field(default_factory=lambda: list(FAMILIES), min_length=1)
    held_out: list[FamilyName] = Field(default_factory=list, description="families left out of training, tested")
    n_train: int = Field(200, ge=1, le=100_000, description="training equations per family")
    n_test: int = Field(20, ge=1, le=10_000, description="test equations per family")
    n_initial_train: int = Field(8, ge=1, le=100, description="initial states per training equation")
    n_initial_test: int = Field(4, ge=1, le=100, description="initial states per test equation")
    noise_level: float = Field(0.02, ge=0, le=0.5, description="noise L2 norm / trajectory L2 norm")
    spread: float = Field(0.1, ge=0, lt=1, description="parameters within +-spread x |nominal|")
    ood_spread: float = Field(0.2, ge=0, lt=1, description="spread of the out-of-distribution test set")
    corruption: bool = Field(True, description="symbol input with a term added (p_add) or deleted (p_delete)")
    p_add: Fraction = 0.15
    p_delete: Fraction = 0.15
    input_step: int = Field(2, ge=1, le=8, description="observe every input_step-th of the first 64 times")

    @model_validator(mode="after")
    def _families(self):
        unknown = sorted(set(self.held_out) - set(self.families))
        if unknown:
            raise ValueError(f"held_out {unknown} must also be listed in families")
        if len(set(self.families) - set(self.held_out)) == 0:
            raise ValueError("every family is held out; keep at least one for training")
        return self

    @property
    def n_input(self) -> int:
        return len(range(0, N_OBSERVED, self.input_step))


class ModelSpec(Section):
    kind: Literal["prose"] = "prose"
    width: int = Field(128, ge=8, le=2048)
    heads: int = Field(4, ge=1, le=32)
    ffn: int = Field(512, ge=8, le=8192)
    data_layers: int = Field(2, ge=1, le=24)
    symbol_encoder_layers: int = Field(2, ge=1, le=24)
    fusion_layers: int = Field(2, ge=1, le=24)
    operator_layers: int = Field(2, ge=1, le=24)
    symbol_decoder_layers: int = Field(2, ge=1, le=24)
    symbols: bool = Field(True, description="false: the data-only ablation (no symbol encoder or decoder)")
    max_len: int = Field(160, ge=16, le=512, description="longest decoded expression, tokens")
    time_features: int = Field(16, ge=0, le=256, description="sine/cosine pairs of t; 0 = the paper's plain t")

    @model_validator(mode="after")
    def _heads_divide_width(self):
        if self.width % self.heads:
            raise ValueError(f"width {self.width} must be a multiple of heads {self.heads}")
        return self


class TrainSpec(Section):
    steps: int = Field(900, ge=1, le=10_000_000, description="optimizer steps in all")
    steps_per_epoch: int = Field(50, ge=1, description="steps between checkpoints")
    batch_size: int = Field(64, ge=1, le=8192)
    lr: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0)
    warmup: float = Field(0.05, ge=0, lt=1, description="fraction of steps of linear warm-up, then cosine")
    clip: float = Field(1.0, gt=0)
    queries: tuple[int, int] = Field((32, 64), description="random count of output times per batch (min, max)")
    no_skeleton: Fraction = Field(0.1, description="fraction of samples trained without a skeleton")
    noisy_targets: bool = Field(True, description="train against noisy targets, as the paper")
    data_only_steps: int | None = Field(None, ge=1, description="steps of the data-only baseline (default: steps)")
    bf16: bool = Field(False, description="bfloat16 autocast on CUDA")

    @model_validator(mode="after")
    def _queries(self):
        lo, hi = self.queries
        if not 1 <= lo <= hi <= N_TIMES - N_OBSERVED:
            raise ValueError(f"queries must satisfy 1 <= min <= max <= {N_TIMES - N_OBSERVED}")
        return self


Baseline = Literal["data_only", "pysindy", "nominal", "decoded"]


class EvaluateSpec(Section):
    baselines: list[Baseline] = Field(default_factory=lambda: ["data_only", "pysindy", "nominal", "decoded"])
    noise_levels: list[Annotated[float, Field(ge=0, le=0.5)]] = Field(
        default_factory=lambda: [0.0, 0.02, 0.05, 0.1], description="test-input noise levels evaluated")
    rhs_points: int = Field(50, ge=1, le=100_000, description="points in [-5, 5]^3 for the right-hand-side error")
    sindy_degree: int = Field(3, ge=1, le=5)
    sindy_threshold: float = Field(0.05, ge=0)
    batch_size: int = Field(256, ge=1)
    headline: str = "rel_l2_clean_2-4_median"


class ProseCase(Case):
    pipeline: Literal["prose"]
    data: DataSpec = Field(default_factory=DataSpec)
    surrogate: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)

    @model_validator(mode="after")
    def _consistent(self):
        if "decoded" in self.evaluate.baselines and not self.surrogate.symbols:
            raise ValueError("evaluate.baselines has 'decoded', but surrogate.symbols is false (nothing decoded)")
        return self

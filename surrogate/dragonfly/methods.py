"""Forecasting methods on one sample layout, with save/load and the public `forecast` call.

A sample is the last `steps` iterations of a target job before the one to forecast: node features
(steps, routers, features), runtimes (steps,), the whole runtime history (for ARIMA) and the next runtime.
Every method returns runtime quantiles at `smart.QUANTILES` (median = the point forecast).

Methods: "last" (last value), "moving_average" (mean of the last `window` runtimes), "arima"
(statsmodels ARIMA(1,0,0) refitted on the job's history at every forecast, its own intervals), "gbt"
(scikit-learn HistGradientBoostingRegressor on aggregates, one quantile model per level; not saved, as
tree models cannot be stored without pickling) and the neural kinds of `smart.KINDS`. Simple methods
take their intervals from the quantiles of their training residuals (log ratio).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from surrogate.core import distributed
from surrogate.core.store import load_weights, save_weights, tensor_state, write_json
from surrogate.core.training import Trainer, batches

from . import smart
from .features import check_counters, iteration_counters, job_share, node_features, router_edges
from .topology import PRESETS, Dragonfly

QUANTILES = smart.QUANTILES
SIMPLE_KINDS = ("last", "moving_average", "arima", "gbt")


@dataclass
class Samples:
    """Samples of one topology (all arrays share the first axis)."""

    preset: str
    x: np.ndarray          # (N, L, R, F) node features
    rt: np.ndarray         # (N, L) runtimes, µs
    y: np.ndarray          # (N,) next runtime, µs
    hist: list             # N arrays: the runtime history up to the last step (iteration 1 on)
    scenario: np.ndarray   # (N,) scenario index within the split
    iteration: np.ndarray  # (N,) index of the forecast iteration

    def __len__(self) -> int:
        return len(self.y)


def samples_from_runs(runs: list[xr.Dataset], steps: int) -> list[Samples]:
    """Samples of every run, grouped by preset; iteration 0 (which includes the arrival) is skipped."""
    groups: dict[str, dict[str, list]] = {}
    for si, ds in enumerate(runs):
        preset = ds.attrs["preset"]
        topo = Dragonfly.preset(preset)
        counters, rt = iteration_counters(ds, job=0)
        feats = node_features(counters, topo, job_share(topo, ds["job_node_router"].values[0]))
        g = groups.setdefault(preset, {k: [] for k in ("x", "rt", "y", "hist", "scenario", "iteration")})
        for i in range(steps, len(rt) - 1):
            g["x"].append(feats[i - steps + 1: i + 1])
            g["rt"].append(rt[i - steps + 1: i + 1])
            g["y"].append(rt[i + 1])
            g["hist"].append(rt[1: i + 1])
            g["scenario"].append(si)
            g["iteration"].append(i + 1)
    return [Samples(p, np.stack(g["x"]).astype(np.float32), np.stack(g["rt"]), np.array(g["y"]), g["hist"],
                    np.array(g["scenario"]), np.array(g["iteration"])) for p, g in groups.items() if g["y"]]


@dataclass(frozen=True)
class Forecast:
    """Next-iteration runtime (µs): the median and the central 80% and 95% intervals."""

    runtime_us: float
    low80: float
    high80: float
    low95: float
    high95: float

    def as_dict(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in ("runtime_us", "low80", "high80", "low95", "high95")}


def _topology_for(shape, topology: Dragonfly | None) -> Dragonfly:
    if topology is not None:
        return topology
    for name, (a, p, h) in PRESETS.items():
        g = a * h + 1
        if len(shape) == 4 and shape[1:3] == (a * g, a - 1 + h + p):
            return Dragonfly.preset(name)
    allowed = ", ".join(f"{n}: (L, {a * (a * h + 1)}, {a - 1 + h + p}, 3)" for n, (a, p, h) in PRESETS.items())
    raise ValueError(f"expected counters_window with shape (iterations, routers, ports, 3) of a known preset "
                     f"({allowed}) or pass topology=, got {tuple(shape)}")


class Method:
    """Base: `fit(train, calibration)`, `predict(samples) -> (N, Q) runtime quantiles`, `forecast(...)`."""

    kind: str
    steps: int

    def __init__(self, name: str, steps: int):
        self.name, self.steps = name, steps
        self.metadata: dict = {}

    # -- the public call -----------------------------------------------------------------------
    def forecast(self, counters_window, runtimes_us, job_routers, topology: Dragonfly | None = None) -> Forecast:
        """Next-iteration runtime of a job from its last `steps` iterations.

        counters_window: (steps, n_routers, radix, 3) port counter rates per iteration (bytes per µs,
        fraction of time the downstream buffer was full, stalls per µs); runtimes_us: (steps,) runtimes of
        those iterations; job_routers: router of each of the job's ranks. The topology is inferred from
        the shape among the presets unless given.
        """
        topo = _topology_for(np.shape(counters_window), topology)
        c = check_counters(counters_window, topo, self.steps)
        rt = np.asarray(runtimes_us, dtype=np.float64)
        if rt.shape != (self.steps,) or not np.all(np.isfinite(rt)) or rt.min() <= 0:
            raise ValueError(f"expected runtimes_us with shape ({self.steps},), finite and > 0, "
                             f"got shape {rt.shape}" + ("" if rt.shape != (self.steps,) else " with bad values"))
        jr = np.asarray(job_routers)
        if jr.ndim != 1 or jr.size == 0 or not np.issubdtype(jr.dtype, np.integer) or jr.min() < 0 \
                or jr.max() >= topo.n_routers:
            raise ValueError(f"expected job_routers as a non-empty 1D array of router ids in [0, {topo.n_routers - 1}]"
                             f" for {topo!r}, got {jr!r}")
        x = node_features(c, topo, job_share(topo, jr))[None]
        s = Samples(next(k for k, v in PRESETS.items() if v == (topo.a, topo.p, topo.h)) if
                    (topo.a, topo.p, topo.h) in PRESETS.values() else "custom", x, rt[None], np.array([np.nan]),
                    [rt], np.zeros(1, int), np.zeros(1, int))
        self._topo = topo
        q = self.predict([s])[0]
        return Forecast(float(q[2]), float(q[1]), float(q[3]), float(q[0]), float(q[4]))

    def predict(self, groups: list[Samples]) -> np.ndarray:
        return np.concatenate([self._predict(s) for s in groups]) if groups else np.zeros((0, len(QUANTILES)))

    def fit(self, train: list[Samples], calibration: list[Samples], cfg=None, checkpoint: Path | None = None,
            seed: int = 0, validation: list[Samples] | None = None) -> list[float]:
        """Fit on `train`; `validation` picks training choices (the epoch), `calibration` sets the intervals."""
        return []

    def _predict(self, s: Samples) -> np.ndarray:
        raise NotImplementedError

    # -- persistence -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {}

    def save(self, folder: Path) -> None:
        write_json(folder / f"{self.name}.json", {"kind": self.kind, "name": self.name, "steps": self.steps,
                                                   "args": self.args(), "state": self.state(),
                                                   "metadata": self.metadata})

    def args(self) -> dict:
        return {}


def _log_residual_quantiles(pred_log_ratio: np.ndarray, y_log_ratio: np.ndarray) -> list[float]:
    """Quantiles of the training residuals around a point forecast (log ratio), median shift removed."""
    r = y_log_ratio - pred_log_ratio
    q = np.quantile(r, QUANTILES) if r.size else np.zeros(len(QUANTILES))
    return (q - q[2]).tolist()


class _PointMethod(Method):
    """A point forecast with intervals from its residual quantiles on the training samples."""

    def __init__(self, name: str, steps: int):
        super().__init__(name, steps)
        self.offsets_ = None

    def point(self, s: Samples) -> np.ndarray:
        raise NotImplementedError

    def fit(self, train, calibration, cfg=None, checkpoint=None, seed=0, validation=None):
        groups = train + (validation or []) + calibration      # nothing is fitted but the offsets
        pts = np.concatenate([self.point(s) for s in groups])
        ys = np.concatenate([s.y for s in groups])
        self.offsets_ = _log_residual_quantiles(np.log(pts), np.log(ys))
        return []

    def _predict(self, s):
        if self.offsets_ is None:
            raise RuntimeError(f"{self.name}: call fit or surrogate.load first")
        return self.point(s)[:, None] * np.exp(np.array(self.offsets_))[None]

    def state(self):
        return {"offsets": self.offsets_}

    def set_state(self, state):
        self.offsets_ = state["offsets"]


class LastValue(_PointMethod):
    kind = "last"

    def point(self, s):
        return s.rt[:, -1]


class MovingAverage(_PointMethod):
    kind = "moving_average"

    def __init__(self, name, steps, window: int = 4):
        super().__init__(name, steps)
        self.window = min(window, steps)

    def args(self):
        return {"window": self.window}

    def point(self, s):
        return s.rt[:, -self.window:].mean(1)


class Arima(Method):
    """ARIMA(p, d, q) refitted on each job's runtime history; intervals from the model's own forecast."""

    kind = "arima"

    def __init__(self, name, steps, order=(1, 0, 0)):
        super().__init__(name, steps)
        self.order = tuple(order)

    def args(self):
        return {"order": list(self.order)}

    def _predict(self, s):
        from statsmodels.tsa.arima.model import ARIMA

        out = np.empty((len(s), len(QUANTILES)))
        for n, h in enumerate(s.hist):
            h = np.log(np.asarray(h, float))
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    res = ARIMA(h, order=self.order).fit()
                f = res.get_forecast(1)
                mean = float(f.predicted_mean[0])
                se = float(np.sqrt(f.var_pred_mean[0]))
            except (np.linalg.LinAlgError, ValueError):
                mean, se = float(h[-1]), float(np.std(h) + 1e-6)
            z = np.array([-1.959964, -1.281552, 0.0, 1.281552, 1.959964])
            out[n] = np.exp(mean + z * se)
        return out


def aggregates(s: Samples) -> np.ndarray:
    """Aggregate features for trees: log runtime ratios of the window, pooled router features of the last step."""
    lr = np.log(s.rt)
    x = s.x[:, -1]
    share = x[..., -1]
    w = share / np.maximum(share.sum(-1, keepdims=True), 1e-9)
    pooled = np.concatenate([(x * w[..., None]).sum(1), x.mean(1), x.max(1)], axis=-1)
    return np.concatenate([lr - lr[:, -1:], lr[:, -1:], pooled], axis=1)


class TreeAggregates(Method):
    """HistGradientBoostingRegressor (quantile loss, one model per quantile) on `aggregates`."""

    kind = "gbt"

    def __init__(self, name, steps, max_iter: int = 200, learning_rate: float = 0.05, max_leaf_nodes: int = 15):
        super().__init__(name, steps)
        self.kw = {"max_iter": max_iter, "learning_rate": learning_rate, "max_leaf_nodes": max_leaf_nodes}
        self.models_ = None

    def args(self):
        return dict(self.kw)

    def fit(self, train, calibration, cfg=None, checkpoint=None, seed=0, validation=None):
        from sklearn.ensemble import HistGradientBoostingRegressor

        X = np.concatenate([aggregates(s) for s in train])
        y = np.concatenate([np.log(s.y / s.rt[:, -1]) for s in train])
        self.models_ = [HistGradientBoostingRegressor(loss="quantile", quantile=q, random_state=seed, **self.kw)
                        .fit(X, y) for q in QUANTILES]
        return []

    def _predict(self, s):
        if self.models_ is None:
            raise RuntimeError(f"{self.name}: tree models are not saved (no pickling); only evaluated in the run")
        X = aggregates(s)
        q = np.sort(np.stack([m.predict(X) for m in self.models_], axis=1), axis=1)
        return s.rt[:, -1:] * np.exp(q)


class Neural(Method):
    """A `smart.Forecaster` of any kind, trained with the pinball loss on `smart.log_target`, calibrated by CQR.

    With `members` > 1 it is a `smart.Ensemble` of forecasters trained one after the other from different
    seeds, each keeping its own best validation epoch.
    """

    def __init__(self, name, steps, kind="smart", pretrained: str | None = None, members: int = 1, **net_args):
        super().__init__(name, steps)
        self.kind = kind
        self.net_args = net_args
        self.pretrained = pretrained
        self.members = members
        nets = [smart.Forecaster(kind, steps=steps, **net_args) for _ in range(members)]
        self.net = nets[0] if members == 1 else smart.Ensemble(nets)
        self._edges: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fitted_ = False

    def args(self):
        return {"kind": self.kind, **self.net_args, **({"members": self.members} if self.members > 1 else {})}

    def _target(self, s: Samples) -> np.ndarray:
        return smart.log_target(s.y, s.rt, self.net.anchor)

    def edges(self, topo: Dragonfly):
        key = f"{topo.a},{topo.p},{topo.h}"
        if key not in self._edges:
            ei, cls = router_edges(topo)
            self._edges[key] = (torch.as_tensor(ei), torch.as_tensor(cls))
        return self._edges[key]

    def _topology(self, s: Samples) -> Dragonfly:
        return Dragonfly.preset(s.preset) if s.preset in PRESETS else self._topo

    def _raw(self, s: Samples, idx=None, net: torch.nn.Module | None = None) -> torch.Tensor:
        """Quantiles of the log target for samples `idx` of `s`, through `net` (the DDP wrapper in training)."""
        idx = slice(None) if idx is None else np.asarray(idx)  # a 1-element tensor would index as a scalar
        ei, cls = self.edges(self._topology(s))
        x = torch.as_tensor(s.x[idx])
        rt = torch.as_tensor(s.rt[idx], dtype=torch.float32)
        return (net or self.net)(x, rt, ei, cls)

    def fit(self, train, calibration, cfg=None, checkpoint=None, seed=0, validation=None):
        """Train (each member), keep the epoch with the lowest validation loss, then measure the conformal
        offsets on `calibration`. Without validation scenarios the calibration ones pick the epoch too, and
        without either the training ones are used (both then optimistic)."""
        validation = validation or calibration
        nets = list(self.net.members) if isinstance(self.net, smart.Ensemble) else [self.net]
        history, epochs = [], []
        for k, net in enumerate(nets):
            ckpt = checkpoint if checkpoint is None or k == 0 else Path(checkpoint).with_suffix(f".m{k}.pt")
            losses, e = self._fit_one(net, train, validation, cfg, ckpt, seed + 1000 * k)
            history = history or losses
            epochs.append(e)
        self.metadata["selected_epoch"] = epochs[0] if len(epochs) == 1 else epochs
        self.calibrate(calibration or validation or train)
        self.fitted_ = True
        return history

    def _fit_one(self, one: smart.Forecaster, train, validation, cfg, checkpoint, seed) -> tuple[list[float], int]:
        if self.pretrained:
            smart.load_pretrained_transformer(one, self.pretrained)
        one.set_normalisers(np.concatenate([s.x[:, -1].reshape(-1, s.x.shape[-1]) for s in train]),
                            np.log(np.concatenate([s.rt[:, -1] for s in train])))
        one.start_at_anchor(np.concatenate([self._target(s) for s in train]))
        opt = torch.optim.AdamW(one.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(cfg.epochs, 1))
        trainer = Trainer(one, opt, sched, checkpoint, cfg.epochs, f"train {self.name}")
        distributed.check_divides(cfg.batch_size, f"{self.name}: train.batch_size")
        # under torchrun each rank takes its part of every batch; gnn_only embeds runtime tokens it does
        # not use, which DDP must be told about
        net = distributed.wrap(one, find_unused_parameters=self.kind == "gnn_only")

        def epoch(e: int) -> float:
            total, n = 0.0, 0
            for gi, s in enumerate(train):
                y = torch.as_tensor(self._target(s), dtype=torch.float32)
                for idx in batches(len(s), cfg.batch_size, seed * 31 + gi, e):
                    part, weight = distributed.shard(idx)
                    loss = smart.pinball(self._raw(s, part, net), y[part])
                    opt.zero_grad()
                    (loss * weight).backward()
                    torch.nn.utils.clip_grad_norm_(one.parameters(), 1.0)
                    opt.step()
                    total += distributed.part_of_global_mean(float(loss.detach()), weight) * len(idx)
                    n += len(idx)
            (total,) = distributed.sum_over_ranks(total)
            return total / max(n, 1)

        best_file = Path(checkpoint).with_suffix(".best.pt") if checkpoint else None
        best = {"loss": np.inf, "epoch": None}
        if best_file is not None and best_file.exists():  # a resumed fit keeps competing with its best epoch so far
            kept = load_weights(best_file)
            best.update(loss=float(kept["loss"]), epoch=int(kept["epoch"]))

        def select(e: int) -> None:
            """Keep the weights if their validation loss is the lowest so far."""
            one.eval()
            with torch.no_grad():
                val = float(np.mean([float(smart.pinball(self._raw(c, net=one), torch.as_tensor(
                    self._target(c), dtype=torch.float32))) for c in validation]))
            one.train()
            if val < best["loss"]:
                best.update(loss=val, epoch=e)
                if best_file is not None:
                    save_weights(best_file, {"model": tensor_state(one), "loss": val, "epoch": e})

        def epoch_and_select(e: int) -> float:
            loss = epoch(e)
            if validation:
                select(e)
            return loss

        # the untrained forecaster competes too (epoch -1): started at the anchor it is a moving average, so
        # the kept model never has a higher validation loss than that
        if validation and best["epoch"] is None and not Path(checkpoint).exists():
            select(-1)
        history = trainer.run(epoch_and_select)
        if best_file is not None and best_file.exists():
            one.load_state_dict(load_weights(best_file)["model"])
        one.eval()
        return history, best["epoch"]

    def calibrate(self, groups: list[Samples]) -> None:
        self.net.conformal.zero_()
        with torch.no_grad():
            pred = np.concatenate([self._raw(s).numpy() for s in groups])
        y = np.concatenate([self._target(s) for s in groups])
        self.net.conformal.copy_(torch.as_tensor(smart.conformal_offsets(pred, y), dtype=torch.float32))

    def _predict(self, s):
        self.net.eval()
        with torch.no_grad():
            out = self._raw(s)
            return self.net.runtime_quantiles(out, torch.as_tensor(s.rt, dtype=torch.float32)).double().numpy()

    def tune(self, s: Samples, steps: int = 5, lr: float = 1e-3) -> None:
        """Online tuning: a few gradient steps on recent iterations (normalisers and calibration kept)."""
        if len(s) == 0 or steps == 0:
            return
        self.net.train()
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        y = torch.as_tensor(self._target(s), dtype=torch.float32)
        for _ in range(steps):
            loss = smart.pinball(self._raw(s), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        self.net.eval()

    def save(self, folder):
        super().save(folder)
        save_weights(folder / f"{self.name}.pt", tensor_state(self.net))


def build(kind: str, name: str, steps: int, args: dict) -> Method:
    """A method by kind; `args` are its settings from the case."""
    if kind in smart.KINDS:
        return Neural(name, steps, kind=kind, **args)
    table = {"last": LastValue, "moving_average": MovingAverage, "arima": Arima, "gbt": TreeAggregates}
    if kind not in table:
        raise ValueError(f"unknown method kind {kind!r}; allowed: {', '.join([*table, *smart.KINDS])}")
    return table[kind](name, steps, **args)


def load_method(folder: Path, name: str, device: str = "cpu") -> Method:
    spec = json.loads((folder / f"{name}.json").read_text())
    args = dict(spec["args"])
    kind = args.pop("kind", spec["kind"])
    m = build(kind, spec["name"], spec["steps"], args)
    m.metadata = spec.get("metadata", {})
    if isinstance(m, Neural):
        m.net.load_state_dict(load_weights(folder / f"{name}.pt"))
        m.net.eval()
        m.fitted_ = True
    elif isinstance(m, _PointMethod):
        m.set_state(spec["state"])
    elif isinstance(m, TreeAggregates):
        pass  # not saved: _predict says so
    return m


def forecast_latency_ms(method: Method, s: Samples, n: int = 20) -> float:
    """Median wall time of one forecast (batch of one), ms."""
    times = []
    for i in range(min(n, len(s))):
        one = Samples(s.preset, s.x[i:i + 1], s.rt[i:i + 1], s.y[i:i + 1], [s.hist[i]], s.scenario[i:i + 1],
                      s.iteration[i:i + 1])
        t0 = time.perf_counter()
        method.predict([one])
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)) if times else float("nan")

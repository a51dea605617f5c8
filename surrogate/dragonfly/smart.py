"""SMART-style runtime forecaster and its neural ablations/baselines (torch, torch_geometric).

Per iteration step t of the target job, the router graph carries node features from the port counters
(`features.node_features`). The variants (`KINDS`):

- "smart":            GNN over the router graph per step -> pooled graph embedding + runtime token ->
                      GPT-2-style causal transformer over the steps -> quantile head on the last step.
- "gnn_only":         GNN on the last step's graph + an MLP of the runtime history -> quantile head.
- "transformer_only": pooled node features (no GNN) + runtime token -> transformer -> quantile head.
- "lstm":             runtime history only -> LSTM -> quantile head.
- "lstm_feat":        runtime history + pooled router features -> LSTM -> quantile head.

GNN layer: h' = GELU(W_s h + GCN_local(h) + GCN_global(h)), one torch_geometric GCNConv per link class.
Pooling per graph: the job-weighted mean (weights = share of each router's terminals the target uses),
the plain mean and the max over routers. The forecast is a correction to the anchor a = geometric mean of
the last `anchor` runtimes of the window (all by default; so an untrained head is a moving average):
runtime token of step t: (log r_t - log a, (log r_t - mu)/sd); output: quantiles of y = log(r_{L+1} / a),
kept ordered by construction (median, then cumulative softplus steps outwards). `Ensemble` averages the
quantiles of members trained from different seeds.
Intervals are widened by split-conformal offsets (CQR) measured on calibration scenarios.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

KINDS = ("smart", "gnn_only", "transformer_only", "lstm", "lstm_feat")
QUANTILES = (0.025, 0.1, 0.5, 0.9, 0.975)
LEVELS = {0.8: (1, 3), 0.95: (0, 4)}          # interval level -> indices of its quantiles


def _geometric():
    try:
        import torch_geometric.nn as pyg_nn
    except ImportError as err:  # pragma: no cover - the extra is installed with the family
        raise ImportError("the Dragonfly surrogate needs torch_geometric: pip install 'surrogate[dragonfly]'") from err
    return pyg_nn


class GPT2Block(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)) with a causal mask, then x + MLP(LN(x)) (GELU, 4x wide)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class CausalTransformer(nn.Module):
    """GPT-2-style decoder stack over time steps (learned positions, final LayerNorm)."""

    def __init__(self, d: int, layers: int, heads: int, max_len: int, dropout: float = 0.0):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_len, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList(GPT2Block(d, heads, dropout) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        mask = torch.triu(torch.ones(L, L, dtype=torch.bool, device=x.device), diagonal=1)
        x = x + self.pos[-L:]
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)


class RouterGNN(nn.Module):
    """GCN layers over the router graph with separate weights for local and global links; graph pooling."""

    def __init__(self, n_in: int, hidden: int, layers: int):
        super().__init__()
        pyg = _geometric()
        dims = [n_in] + [hidden] * layers
        self.self_lin = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.conv_local = nn.ModuleList(pyg.GCNConv(a, b, add_self_loops=False) for a, b in zip(dims[:-1], dims[1:]))
        self.conv_global = nn.ModuleList(pyg.GCNConv(a, b, add_self_loops=False) for a, b in zip(dims[:-1], dims[1:]))
        self.out_dim = 3 * hidden
        self._batched: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def _edges(self, edge_index: torch.Tensor, edge_cls: torch.Tensor, n_graphs: int, R: int):
        key = (n_graphs, R, edge_index.shape[1], str(edge_index.device))
        if key not in self._batched:
            off = (torch.arange(n_graphs, device=edge_index.device) * R).repeat_interleave(edge_index.shape[1])
            big = edge_index.repeat(1, n_graphs) + off
            cls = edge_cls.repeat(n_graphs)
            self._batched = {key: (big[:, cls == 0], big[:, cls == 1])}
        return self._batched[key]

    def forward(self, x: torch.Tensor, share: torch.Tensor, edge_index: torch.Tensor,
                edge_cls: torch.Tensor) -> torch.Tensor:
        """x (G, R, F) node features of G graphs, share (G, R) job weights -> (G, 3*hidden)."""
        G, R, _ = x.shape
        e_loc, e_glob = self._edges(edge_index, edge_cls, G, R)
        h = x.reshape(G * R, -1)
        for lin, cl, cg in zip(self.self_lin, self.conv_local, self.conv_global):
            h = nn.functional.gelu(lin(h) + cl(h, e_loc) + cg(h, e_glob))
        h = h.reshape(G, R, -1)
        w = share / share.sum(-1, keepdim=True).clamp_min(1e-9)
        return torch.cat([(h * w[..., None]).sum(1), h.mean(1), h.amax(1)], dim=-1)


def pool_features(x: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
    """Job-weighted mean, mean and max of node features over routers: (..., R, F) -> (..., 3F)."""
    w = share / share.sum(-1, keepdim=True).clamp_min(1e-9)
    return torch.cat([(x * w[..., None]).sum(-2), x.mean(-2), x.amax(-2)], dim=-1)


class Forecaster(nn.Module):
    """One of KINDS; inputs are normalised inside (the normalisers are buffers, saved with the weights)."""

    def __init__(self, kind: str = "smart", n_node_features: int = 16, steps: int = 8, d_model: int = 32,
                 gnn_hidden: int = 32, gnn_layers: int = 2, layers: int = 2, heads: int = 2, dropout: float = 0.0,
                 anchor: int | None = None, init: str = "anchor"):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.kind, self.steps = kind, steps
        self.anchor = min(anchor or steps, steps)        # the last `anchor` runtimes make the anchor
        F, d = n_node_features, d_model
        self.register_buffer("x_mean", torch.zeros(F))
        self.register_buffer("x_std", torch.ones(F))
        self.register_buffer("log_rt_mean", torch.zeros(()))
        self.register_buffer("log_rt_std", torch.ones(()))
        self.register_buffer("conformal", torch.zeros(len(LEVELS)))     # CQR widening per interval level
        if kind in ("smart", "gnn_only"):
            self.gnn = RouterGNN(F, gnn_hidden, gnn_layers)
            self.graph_in = nn.Linear(self.gnn.out_dim, d)
        if kind in ("transformer_only", "lstm_feat"):
            self.pool_in = nn.Linear(3 * F, d)
        self.token_in = nn.Linear(2, d)
        if kind in ("smart", "transformer_only"):
            self.temporal = CausalTransformer(d, layers, heads, steps, dropout)
        elif kind in ("lstm", "lstm_feat"):
            self.lstm = nn.LSTM(d, d, num_layers=layers, batch_first=True)
        else:
            self.history = nn.Sequential(nn.Linear(2 * steps, d), nn.GELU(), nn.Linear(d, d))
            self.mix = nn.Sequential(nn.GELU(), nn.Linear(2 * d, d), nn.GELU())
        if init not in ("anchor", "random"):
            raise ValueError(f"init must be 'anchor' or 'random', got {init!r}")
        self.init = init
        self.head = nn.Linear(d, len(QUANTILES))
        if init == "anchor":      # the untrained forecast is the anchor (biases: `start_at_anchor`)
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    def start_at_anchor(self, y_log: np.ndarray) -> None:
        """With init "anchor": the untrained forecaster's quantiles become those of the training targets around
        the anchor, so that before any step it is the moving average with its residual intervals."""
        if self.init != "anchor":
            return
        q = np.quantile(y_log, QUANTILES)
        mid = len(QUANTILES) // 2
        gaps = np.maximum(np.diff(q), 1e-4)                # q[j+1] - q[j]
        bias = np.empty(len(QUANTILES))
        bias[mid] = q[mid]
        bias[:mid] = gaps[:mid]                            # softplus(b_j) is the gap above quantile j ...
        bias[mid + 1:] = gaps[mid:]                        # ... and below quantile j on the upper side
        others = np.arange(len(QUANTILES)) != mid
        bias[others] = np.log(np.expm1(bias[others]))        # softplus inverse
        with torch.no_grad():
            self.head.bias.copy_(torch.as_tensor(bias, dtype=self.head.bias.dtype))

    def set_normalisers(self, x: np.ndarray, log_rt: np.ndarray) -> None:
        flat = x.reshape(-1, x.shape[-1])
        self.x_mean.copy_(torch.as_tensor(flat.mean(0)))
        self.x_std.copy_(torch.as_tensor(flat.std(0) + 1e-3))
        self.log_rt_mean.fill_(float(log_rt.mean()))
        self.log_rt_std.fill_(float(log_rt.std() + 1e-3))

    def tokens(self, runtimes: torch.Tensor) -> torch.Tensor:
        lr = torch.log(runtimes)
        return torch.stack([lr - log_anchor(runtimes, self.anchor), (lr - self.log_rt_mean) / self.log_rt_std], dim=-1)

    def forward(self, x: torch.Tensor, runtimes: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_cls: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, L, R, F) raw node features (last feature = job share), runtimes (B, L) µs -> (B, Q) quantiles."""
        B, L, R, F = x.shape
        share = x[..., -1]
        xn = (x - self.x_mean) / self.x_std
        tok = self.token_in(self.tokens(runtimes))
        if self.kind == "smart":
            g = self.gnn(xn.reshape(B * L, R, F), share.reshape(B * L, R), edge_index, edge_cls)
            h = self.temporal(tok + self.graph_in(g).reshape(B, L, -1))[:, -1]
        elif self.kind == "transformer_only":
            h = self.temporal(tok + self.pool_in(pool_features(xn, share)))[:, -1]
        elif self.kind == "lstm":
            h = self.lstm(tok)[0][:, -1]
        elif self.kind == "lstm_feat":
            h = self.lstm(tok + self.pool_in(pool_features(xn, share)))[0][:, -1]
        else:
            g = self.graph_in(self.gnn(xn[:, -1], share[:, -1], edge_index, edge_cls))
            h = self.mix(torch.cat([g, self.history(self.tokens(runtimes).reshape(B, -1))], dim=-1))
        q = self.head(h)
        mid = len(QUANTILES) // 2
        lower = q[:, mid:mid + 1] - torch.cumsum(nn.functional.softplus(q[:, :mid]).flip(-1), -1).flip(-1)
        upper = q[:, mid:mid + 1] + torch.cumsum(nn.functional.softplus(q[:, mid + 1:]), -1)
        return torch.cat([lower, q[:, mid:mid + 1], upper], dim=-1)

    def runtime_quantiles(self, out: torch.Tensor, runtimes: torch.Tensor) -> torch.Tensor:
        """Quantiles of log(r / anchor) -> runtime quantiles (µs), with the conformal widening applied."""
        return widen_and_scale(out, self.conformal, log_anchor(runtimes, self.anchor))


class Ensemble(nn.Module):
    """Forecasters of one kind trained from different seeds; their log-target quantiles are averaged
    (each member's are ordered, so the mean is too) and one conformal widening is applied to the mean."""

    def __init__(self, members: list[Forecaster]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.kind, self.steps, self.anchor = members[0].kind, members[0].steps, members[0].anchor
        self.register_buffer("conformal", torch.zeros(len(LEVELS)))
        # the first member's normaliser itself (updated in place with it), so that exports carry it too
        self.register_buffer("x_mean", members[0].x_mean, persistent=False)

    def forward(self, x: torch.Tensor, runtimes: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_cls: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack([m(x, runtimes, edge_index, edge_cls) for m in self.members]).mean(0)

    def runtime_quantiles(self, out: torch.Tensor, runtimes: torch.Tensor) -> torch.Tensor:
        return widen_and_scale(out, self.conformal, log_anchor(runtimes, self.anchor))


def log_anchor(runtimes: torch.Tensor, last: int) -> torch.Tensor:
    """(B, L) runtimes -> (B, 1) log of the geometric mean of the last `last` of them."""
    return torch.log(runtimes[:, -last:]).mean(1, keepdim=True)


def widen_and_scale(out: torch.Tensor, conformal: torch.Tensor, log_a: torch.Tensor) -> torch.Tensor:
    """Log-target quantiles -> runtime quantiles: the per-level conformal widening, kept nested, times the anchor."""
    out = out.clone()
    for j, (lo, hi) in enumerate(LEVELS.values()):
        out[:, lo] -= conformal[j]
        out[:, hi] += conformal[j]
    mid = len(QUANTILES) // 2
    for j in range(mid - 1, -1, -1):
        out[:, j] = torch.minimum(out[:, j], out[:, j + 1])
    for j in range(mid + 1, len(QUANTILES)):
        out[:, j] = torch.maximum(out[:, j], out[:, j - 1])
    return torch.exp(out + log_a)


def log_target(y: np.ndarray, runtimes: np.ndarray, last: int | None = None) -> np.ndarray:
    """The training target: log of the next runtime over the geometric mean of the last `last` runtimes
    (default: the whole window)."""
    return np.log(y) - np.log(runtimes[:, -(last or runtimes.shape[1]):]).mean(axis=1)


def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    q = torch.tensor(QUANTILES, dtype=pred.dtype, device=pred.device)
    e = y[:, None] - pred
    return torch.maximum(q * e, (q - 1) * e).mean()


def conformal_offsets(pred_log: np.ndarray, y_log: np.ndarray) -> np.ndarray:
    """CQR: per level, the offset that makes the interval cover the calibration targets at that rate."""
    out = []
    n = len(y_log)
    for level, (lo, hi) in LEVELS.items():
        e = np.maximum(pred_log[:, lo] - y_log, y_log - pred_log[:, hi])
        k = min(1.0, math.ceil((n + 1) * level) / max(n, 1))
        out.append(float(np.quantile(e, k)) if n else 0.0)
    return np.array(out)


def load_pretrained_transformer(model: Forecaster, path: str) -> None:
    """Copy a local state dict (weights_only) into the temporal transformer; shapes must match."""
    from surrogate.core.store import load_weights

    if not hasattr(model, "temporal"):
        raise ValueError(f"pretrained weights need a transformer; method kind {model.kind!r} has none")
    state = load_weights(path)
    state = {k.removeprefix("temporal."): v for k, v in state.items()}
    own = model.temporal.state_dict()
    bad = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"pretrained weights {path}: keys missing or of another shape in the transformer: "
                         f"{bad[:5]}; expected keys like {list(own)[:3]}")
    model.temporal.load_state_dict(state, strict=False)

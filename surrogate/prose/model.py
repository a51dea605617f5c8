"""The PROSE network: five transformer modules, built from ``torch.nn`` pieces.

data tokens (t_i, u_i) --> data encoder ----\
                                              fusion (self-attention over both, type embedding)
skeleton tokens --> symbol encoder ---------/        |                         |
                                              fused data part             fused text part
query times --> operator decoder (cross-attention only) -> u(t_q)              |
<BOS> equation tokens --> symbol decoder (causal self-attention + cross-attention) -> next token

The operator decoder has no self-attention between queries, so every query time is predicted
independently and training may use any subset of the output times. Each decoder reads its own half
of the fused features, as in the PROSE code. ``symbols=False`` gives the data-only ablation: no
symbol encoder, no symbol decoder, data loss only.

Deviations, stated: the state is divided by one global scale (the training data's standard
deviation, stored with the weights) before the data embedder, where the paper feeds raw values;
times enter both embedders with sine/cosine features beside t itself (``time_features``; 0 gives
the paper's plain t), which a small model trained briefly needs to resolve oscillations in t.
Pre-norm layers as the sheet's CPU configuration asks (the ODE code is post-norm).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from surrogate.prose.symbols import BOS, MAX_TOKENS, PLACEHOLDER, VOCABULARY

DATA_LOSS_WEIGHT = 6.0  # the paper's data : symbol loss weights, 6 : 1
SYMBOL_LOSS_WEIGHT = 1.0


@dataclass(frozen=True)
class ProseConfig:
    """Constructor arguments of ``ProseModel`` (saved as JSON beside the weights)."""

    dim: int = 3
    width: int = 128
    heads: int = 4
    ffn: int = 512
    data_layers: int = 2
    symbol_encoder_layers: int = 2
    fusion_layers: int = 2
    operator_layers: int = 2
    symbol_decoder_layers: int = 2
    symbols: bool = True
    vocab_size: int = len(VOCABULARY)
    pad_id: int = VOCABULARY.pad_id
    max_len: int = 160  # longest decoded expression (with <BOS>/<EOS>); the families need <= 70
    u_scale: float = 1.0
    time_features: int = 16  # sine/cosine pairs of t beside t itself; 0 = the paper's plain t

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal_table(length: int, width: int) -> torch.Tensor:
    """The transformer's fixed sine/cosine positional table, (length, width)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, width, 2, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : width // 2]
    return table


def time_embedding(t: torch.Tensor, pairs: int) -> torch.Tensor:
    """(..., ) times -> (..., 1 + 2 pairs): t and sin/cos of 2 pi k t / 8, k = 1..pairs."""
    if pairs == 0:
        return t[..., None]
    angle = t[..., None] * (2 * math.pi / 8.0) * torch.arange(1, pairs + 1, device=t.device, dtype=t.dtype)
    return torch.cat([t[..., None], torch.sin(angle), torch.cos(angle)], dim=-1)


def _encoder(cfg: ProseConfig, layers: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(cfg.width, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, layers, norm=nn.LayerNorm(cfg.width), enable_nested_tensor=False)


class CrossAttentionBlock(nn.Module):
    """Pre-norm cross-attention + feed-forward, without self-attention among the queries."""

    def __init__(self, cfg: ProseConfig):
        super().__init__()
        self.norm_q, self.norm_ff = nn.LayerNorm(cfg.width), nn.LayerNorm(cfg.width)
        self.attention = nn.MultiheadAttention(cfg.width, cfg.heads, dropout=0.0, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(cfg.width, cfg.ffn), nn.GELU(), nn.Linear(cfg.ffn, cfg.width))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_padding: torch.Tensor | None) -> torch.Tensor:
        q = self.norm_q(x)
        x = x + self.attention(q, memory, memory, key_padding_mask=memory_padding, need_weights=False)[0]
        return x + self.ff(self.norm_ff(x))


class ProseModel(nn.Module):
    """PROSE: ``forward`` for training (teacher forcing), ``predict_data`` and ``decode`` for use."""

    def __init__(self, cfg: ProseConfig):
        super().__init__()
        self.cfg = cfg
        w = cfg.width
        n_time = 1 + 2 * cfg.time_features
        self.data_embedder = nn.Sequential(nn.Linear(n_time + cfg.dim, w), nn.GELU(), nn.Linear(w, w))
        self.data_encoder = _encoder(cfg, cfg.data_layers)
        self.query_embedder = nn.Sequential(nn.Linear(n_time, w), nn.LayerNorm(w))
        self.operator_decoder = nn.ModuleList(CrossAttentionBlock(cfg) for _ in range(cfg.operator_layers))
        self.operator_norm = nn.LayerNorm(w)
        self.operator_head = nn.Linear(w, cfg.dim)
        self.register_buffer("u_scale", torch.tensor(float(cfg.u_scale)))
        if cfg.symbols:
            self.token_embedding = nn.Embedding(cfg.vocab_size, w, padding_idx=cfg.pad_id)  # shared in and out
            # std w^-1/2, so that the sqrt(w)-scaled inputs have unit entries and the tied output layer starts
            # with unit-scale logits (torch's default N(0, 1) would drown the attention updates at the input)
            nn.init.normal_(self.token_embedding.weight, std=w**-0.5)
            with torch.no_grad():
                self.token_embedding.weight[cfg.pad_id].zero_()
            self.register_buffer("positions", sinusoidal_table(max(cfg.max_len, MAX_TOKENS), w), persistent=False)
            self.symbol_encoder = _encoder(cfg, cfg.symbol_encoder_layers)
            self.type_embedding = nn.Embedding(2, w)  # 0 data, 1 text
            layer = nn.TransformerDecoderLayer(w, cfg.heads, cfg.ffn, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.symbol_decoder = nn.TransformerDecoder(layer, cfg.symbol_decoder_layers, norm=nn.LayerNorm(w))
            # tokens the decoder may never write: padding, <BOS>, placeholders
            banned = torch.zeros(cfg.vocab_size, dtype=torch.bool)
            banned[[VOCABULARY.index[t] for t in (VOCABULARY.words[cfg.pad_id], BOS, PLACEHOLDER)]] = True
            self.register_buffer("banned", banned, persistent=False)
        self.fusion = _encoder(cfg, cfg.fusion_layers)

    # ------------------------------------------------------------------ pieces
    def _check(self, t_obs: torch.Tensor, u_obs: torch.Tensor) -> None:
        if u_obs.ndim != 3 or u_obs.shape[-1] != self.cfg.dim or t_obs.shape != u_obs.shape[:2]:
            raise ValueError(f"expected t_obs with shape (B, N) and u_obs with shape (B, N, {self.cfg.dim}), "
                             f"got {tuple(t_obs.shape)} and {tuple(u_obs.shape)}")

    def _embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        return self.token_embedding(ids) * math.sqrt(self.cfg.width) + self.positions[: ids.shape[1]]

    def encode(self, t_obs: torch.Tensor, u_obs: torch.Tensor, skeleton: torch.Tensor | None = None):
        """Fused features: (data part (B, N, W), text part (B, S, W) or None, text padding mask or None)."""
        self._check(t_obs, u_obs)
        x = torch.cat([time_embedding(t_obs, self.cfg.time_features), u_obs / self.u_scale], dim=-1)
        data = self.data_encoder(self.data_embedder(x))
        if not self.cfg.symbols:
            return self.fusion(data), None, None
        if skeleton is None:
            raise ValueError("this PROSE model reads a skeleton: expected skeleton token ids with shape (B, S)")
        text_pad = skeleton == self.cfg.pad_id
        text = self.symbol_encoder(self._embed_tokens(skeleton), src_key_padding_mask=text_pad)
        n = data.shape[1]
        both = torch.cat([data + self.type_embedding.weight[0], text + self.type_embedding.weight[1]], dim=1)
        padding = torch.cat([torch.zeros(text_pad.shape[0], n, dtype=torch.bool, device=text_pad.device), text_pad],
                            dim=1)
        fused = self.fusion(both, src_key_padding_mask=padding)
        return fused[:, :n], fused[:, n:], text_pad

    def operate(self, data_features: torch.Tensor, t_query: torch.Tensor) -> torch.Tensor:
        """States at the query times (B, Q) -> (B, Q, dim), in the data's units."""
        x = self.query_embedder(time_embedding(t_query, self.cfg.time_features))
        for block in self.operator_decoder:
            x = block(x, data_features, None)
        return self.operator_head(self.operator_norm(x)) * self.u_scale

    def symbol_logits(self, text_features: torch.Tensor, text_pad: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, L, V) for every position of ``prefix`` (B, L); causal."""
        length = prefix.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=prefix.device).triu(1)
        h = self.symbol_decoder(self._embed_tokens(prefix), text_features, tgt_mask=causal,
                                tgt_key_padding_mask=prefix == self.cfg.pad_id, memory_key_padding_mask=text_pad)
        return h @ self.token_embedding.weight.T

    # ------------------------------------------------------------------ use
    def forward(self, t_obs, u_obs, t_query, skeleton=None, target_in=None):
        """Teacher-forced pass: predicted states (B, Q, dim) and symbol logits (B, L, V) (None if data-only)."""
        data, text, text_pad = self.encode(t_obs, u_obs, skeleton)
        u = self.operate(data, t_query)
        logits = None if text is None or target_in is None else self.symbol_logits(text, text_pad, target_in)
        return u, logits

    @torch.inference_mode()
    def decode(self, text: torch.Tensor, text_pad: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
        """Greedy decoding from <BOS>; (B, L) ids ending in <EOS> (or cut at max_len).

        Incremental: each layer keeps the attention keys and values of the positions already written and
        of the text, so a step costs one token per layer instead of re-running the whole prefix (the
        decoder is causal and pre-norm, so earlier positions never change). ``symbol_logits`` gives the
        same tokens, slower.
        """
        max_len = max_len or self.cfg.max_len
        b, heads, width = text.shape[0], self.cfg.heads, self.cfg.width
        out = torch.full((b, 1), VOCABULARY.bos_id, dtype=torch.long, device=text.device)
        done = torch.zeros(b, dtype=torch.bool, device=text.device)
        layers = self.symbol_decoder.layers
        # the layers' own attention weights, applied with projected keys and values kept between steps: the
        # text's once for all steps, each written position's once when it is written
        text_keys, text_values = [], []
        for layer in layers:
            _, w_k, w_v = layer.multihead_attn.in_proj_weight.chunk(3)
            _, b_k, b_v = layer.multihead_attn.in_proj_bias.chunk(3)
            text_keys.append(_split_heads(F.linear(text, w_k, b_k), heads))
            text_values.append(_split_heads(F.linear(text, w_v, b_v), heads))
        text_mask = ~text_pad[:, None, None, :]  # True where a text position may be attended to
        cross_query = [(layer.multihead_attn.in_proj_weight[:width], layer.multihead_attn.in_proj_bias[:width])
                       for layer in layers]
        keys: list[torch.Tensor | None] = [None] * len(layers)
        values: list[torch.Tensor | None] = [None] * len(layers)
        def norm(layer_norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:  # functional: no module call per step
            return F.layer_norm(x, layer_norm.normalized_shape, layer_norm.weight, layer_norm.bias, layer_norm.eps)

        for step in range(max_len - 1):
            x = self.token_embedding(out[:, -1:]) * math.sqrt(self.cfg.width) + self.positions[step:step + 1]
            for k, layer in enumerate(layers):
                attn, cross = layer.self_attn, layer.multihead_attn
                q, key, value = F.linear(norm(layer.norm1, x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
                key, value = _split_heads(key, heads), _split_heads(value, heads)
                keys[k] = key if keys[k] is None else torch.cat([keys[k], key], dim=2)
                values[k] = value if values[k] is None else torch.cat([values[k], value], dim=2)
                a = F.scaled_dot_product_attention(_split_heads(q, heads), keys[k], values[k])
                x = x + F.linear(_merge_heads(a), attn.out_proj.weight, attn.out_proj.bias)
                q = F.linear(norm(layer.norm2, x), *cross_query[k])
                a = F.scaled_dot_product_attention(_split_heads(q, heads), text_keys[k], text_values[k],
                                                   attn_mask=text_mask)
                x = x + F.linear(_merge_heads(a), cross.out_proj.weight, cross.out_proj.bias)
                h = F.gelu(F.linear(norm(layer.norm3, x), layer.linear1.weight, layer.linear1.bias))
                x = x + F.linear(h, layer.linear2.weight, layer.linear2.bias)
            logits = (self.symbol_decoder.norm(x[:, 0]) @ self.token_embedding.weight.T).masked_fill(
                self.banned, float("-inf"))
            nxt = logits.argmax(-1).masked_fill(done, self.cfg.pad_id)
            out = torch.cat([out, nxt[:, None]], dim=1)
            done |= nxt == VOCABULARY.eos_id
            if bool(done.all()):
                break
        return out


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, L, W) -> (B, heads, L, W / heads)."""
    b, length, w = x.shape
    return x.view(b, length, heads, w // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, L, W / heads) -> (B, L, W)."""
    b, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(b, length, heads * d)


def relative_squared_l2(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The paper's data loss: mean over samples of ||pred - target||^2 / ||target||^2."""
    num = ((pred - target) ** 2).flatten(1).sum(1)
    return (num / (target**2).flatten(1).sum(1).clamp_min(1e-12)).mean()


def prose_loss(u_pred, u_target, logits, target_out, pad_id: int = VOCABULARY.pad_id):
    """6 x relative squared L2 on the data + 1 x token cross-entropy; returns (total, data, symbol)."""
    data = relative_squared_l2(u_pred, u_target)
    if logits is None:
        return DATA_LOSS_WEIGHT * data, data, torch.zeros(())
    symbol = nn.functional.cross_entropy(logits.flatten(0, 1), target_out.flatten(), ignore_index=pad_id)
    return DATA_LOSS_WEIGHT * data + SYMBOL_LOSS_WEIGHT * symbol, data, symbol


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

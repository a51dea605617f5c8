"""PROSE network: shapes, causal symbol decoder, independent queries, the loss, both case configurations."""
from pathlib import Path

import numpy as np
import pytest
import torch

from surrogate.core.case import load_case
from surrogate.prose.model import (
    DATA_LOSS_WEIGHT,
    ProseConfig,
    ProseModel,
    count_parameters,
    prose_loss,
    relative_squared_l2,
)
from surrogate.prose.symbols import VOCABULARY

CASES = Path(__file__).resolve().parents[1] / "cases"

SMALL = ProseConfig(width=16, heads=2, ffn=32, data_layers=1, symbol_encoder_layers=1, fusion_layers=1,
                    operator_layers=2, symbol_decoder_layers=2, max_len=24)


def _inputs(b=3, n=8, q=5, s=6, length=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    t_obs = torch.linspace(0, 2, n).expand(b, -1)
    u_obs = torch.randn(b, n, 3, generator=g)
    t_query = 2 + 4 * torch.rand(b, q, generator=g)
    skeleton = torch.randint(10, len(VOCABULARY), (b, s), generator=g)
    target = torch.randint(10, len(VOCABULARY), (b, length), generator=g)
    target[:, 0] = VOCABULARY.bos_id
    return t_obs, u_obs, t_query, skeleton, target


def test_shapes_and_data_only_switch():
    torch.manual_seed(0)
    t_obs, u_obs, t_query, skeleton, target = _inputs()
    u, logits = ProseModel(SMALL)(t_obs, u_obs, t_query, skeleton, target)
    assert u.shape == (3, 5, 3) and logits.shape == (3, 7, len(VOCABULARY))
    data_only = ProseModel(ProseConfig(**{**SMALL.to_dict(), "symbols": False}))
    assert not hasattr(data_only, "symbol_encoder") and not hasattr(data_only, "symbol_decoder")
    u, logits = data_only(t_obs, u_obs, t_query)
    assert u.shape == (3, 5, 3) and logits is None
    with pytest.raises(ValueError, match=r"u_obs with shape \(B, N, 3\)"):
        data_only(t_obs, u_obs[..., :2], t_query)


def test_symbol_decoder_is_causal_and_queries_are_independent():
    torch.manual_seed(1)
    model = ProseModel(SMALL).eval()
    t_obs, u_obs, t_query, skeleton, target = _inputs()
    changed = target.clone()
    changed[:, 4:] = torch.randint(10, len(VOCABULARY), changed[:, 4:].shape)
    with torch.no_grad():
        u, a = model(t_obs, u_obs, t_query, skeleton, target)
        _, b = model(t_obs, u_obs, t_query, skeleton, changed)
        torch.testing.assert_close(a[:, :4], b[:, :4])  # earlier positions never see later tokens
        assert not torch.allclose(a[:, 4:], b[:, 4:])
        # no self-attention among queries: a subset of the query times gives the same states there
        u_sub, _ = model(t_obs, u_obs, t_query[:, [3, 1]], skeleton, target)
        torch.testing.assert_close(u_sub, u[:, [3, 1]])
        # padding in the skeleton is ignored
        padded = torch.cat([skeleton, torch.full((3, 4), VOCABULARY.pad_id)], dim=1)
        u_pad, _ = model(t_obs, u_obs, t_query, padded, target)
        torch.testing.assert_close(u_pad, u, atol=1e-5, rtol=1e-5)


def test_greedy_decoding_stops_and_never_writes_placeholders():
    torch.manual_seed(2)
    model = ProseModel(SMALL).eval()
    t_obs, u_obs, _, skeleton, _ = _inputs()
    _, text, pad = model.encode(t_obs, u_obs, skeleton)
    ids = model.decode(text, pad)
    assert ids.shape[0] == 3 and ids.shape[1] <= SMALL.max_len and bool((ids[:, 0] == VOCABULARY.bos_id).all())
    body = ids[:, 1:]
    assert not bool(((body == VOCABULARY.bos_id) | (body == VOCABULARY.index["<PLACEHOLDER>"])).any())


def test_loss_is_six_relative_squared_l2_plus_cross_entropy():
    pred, target = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]]), torch.tensor([[[1.0, 1.0]], [[2.0, 0.0]]])
    rel = relative_squared_l2(pred, target)
    assert float(rel) == pytest.approx(0.5 * (1 / 2 + 4 / 4))
    logits = torch.randn(2, 4, len(VOCABULARY))
    tokens = torch.randint(10, 100, (2, 4))
    tokens[1, 3] = VOCABULARY.pad_id  # padding does not count
    total, data, symbol = prose_loss(pred, target, logits, tokens)
    ce = torch.nn.functional.cross_entropy(logits[tokens != VOCABULARY.pad_id], tokens[tokens != VOCABULARY.pad_id])
    assert float(symbol) == pytest.approx(float(ce), rel=1e-6)
    assert float(total) == pytest.approx(DATA_LOSS_WEIGHT * float(rel) + float(ce), rel=1e-6)


def _config(case_file: str) -> ProseConfig:
    s = load_case(CASES / case_file).surrogate
    return ProseConfig(width=s.width, heads=s.heads, ffn=s.ffn, data_layers=s.data_layers,
                       symbol_encoder_layers=s.symbol_encoder_layers, fusion_layers=s.fusion_layers,
                       operator_layers=s.operator_layers, symbol_decoder_layers=s.symbol_decoder_layers)


def test_gpu_configuration_builds_on_cpu_with_10_to_25M_parameters():
    case = load_case(CASES / "prose_gpu.yaml")
    assert case.device == "auto" and case.train.bf16
    model = ProseModel(_config("prose_gpu.yaml"))
    n = count_parameters(model)
    assert 10e6 <= n <= 25e6, n
    t_obs, u_obs, t_query, skeleton, target = _inputs(b=1)
    with torch.no_grad():
        u, logits = model(t_obs, u_obs, t_query, skeleton, target)
    assert u.shape == (1, 5, 3) and np.isfinite(u.numpy()).all()


def test_cpu_configuration_size():
    n = count_parameters(ProseModel(_config("prose.yaml")))
    assert 1.5e6 <= n <= 2.5e6, n  # the sheet's CPU range


def test_incremental_decoding_equals_full_recomputation():
    torch.manual_seed(3)
    model = ProseModel(SMALL).eval()
    t_obs, u_obs, _, skeleton, _ = _inputs(b=4)
    skeleton[1, 4:] = VOCABULARY.pad_id
    with torch.no_grad():
        _, text, pad = model.encode(t_obs, u_obs, skeleton)
        ids = model.decode(text, pad, max_len=12)
        full = torch.full((4, 1), VOCABULARY.bos_id)
        for _ in range(11):
            logits = model.symbol_logits(text, pad, full)[:, -1].masked_fill(model.banned, float("-inf"))
            full = torch.cat([full, logits.argmax(-1)[:, None]], dim=1)
    for row, ref in zip(ids, full):
        n = len(row) if VOCABULARY.eos_id not in row.tolist() else row.tolist().index(VOCABULARY.eos_id) + 1
        assert row[:n].tolist() == ref[:n].tolist()

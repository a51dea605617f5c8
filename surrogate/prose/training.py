"""Training data as tensors and the PROSE training loop (resumable, seeded, per-step warm-up + cosine)."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import xarray as xr

from surrogate.core import distributed
from surrogate.core.training import Trainer
from surrogate.prose.model import DATA_LOSS_WEIGHT, SYMBOL_LOSS_WEIGHT, ProseModel, prose_loss
from surrogate.prose.odes import N_OBSERVED
from surrogate.prose.symbols import VOCABULARY


@dataclass
class Arrays:
    """One dataset split as tensors: observed and output indices into the 192-point time grid."""

    times: torch.Tensor  # (T,)
    u: torch.Tensor  # (B, T, 3) clean
    u_noisy: torch.Tensor  # (B, T, 3)
    skeleton: torch.Tensor  # (B, S) token ids, padded
    target: torch.Tensor  # (B, L) <BOS> equation <EOS>, padded
    family: np.ndarray  # (B,) family codes
    obs: torch.Tensor  # observed time indices
    out: torch.Tensor  # predicted time indices

    def __len__(self) -> int:
        return self.u.shape[0]


def observed_indices(input_step: int) -> np.ndarray:
    return np.arange(0, N_OBSERVED, input_step)


def with_markers(ids: np.ndarray) -> np.ndarray:
    """<BOS> ids <EOS>, padding kept at the end."""
    pad = VOCABULARY.pad_id
    out = np.full((ids.shape[0], ids.shape[1] + 2), pad, dtype=np.int64)
    lengths = (ids != pad).sum(1)
    out[:, 0] = VOCABULARY.bos_id
    out[:, 1:-1] = ids
    out[np.arange(len(ids)), lengths + 1] = VOCABULARY.eos_id
    return out


def no_skeleton(n: int) -> torch.Tensor:
    """The symbol input of 'no skeleton given': a lone <BOS>."""
    return torch.full((n, 1), VOCABULARY.bos_id, dtype=torch.long)


def arrays_from(ds: xr.Dataset, input_step: int, rows: np.ndarray | None = None) -> Arrays:
    rows = np.arange(ds.sizes["sample"]) if rows is None else rows
    skeleton = ds["skeleton_tokens"].values[rows].astype(np.int64)
    skeleton = skeleton[:, : max(1, int((skeleton != VOCABULARY.pad_id).sum(1).max()))]
    equation = ds["equation_tokens"].values[rows].astype(np.int64)
    equation = equation[:, : max(1, int((equation != VOCABULARY.pad_id).sum(1).max()))]
    times = ds["time"].values
    return Arrays(
        times=torch.tensor(times, dtype=torch.float32),
        u=torch.tensor(ds["u"].values[rows], dtype=torch.float32),
        u_noisy=torch.tensor(ds["u_noisy"].values[rows], dtype=torch.float32),
        skeleton=torch.tensor(skeleton), target=torch.tensor(with_markers(equation)),
        family=ds["family"].values[rows].astype(int),
        obs=torch.tensor(observed_indices(input_step)), out=torch.arange(N_OBSERVED, len(times)),
    )


def redraw_noise(u: torch.Tensor, level: float, gen: torch.Generator) -> torch.Tensor:
    """The paper's noise, drawn afresh: ||noise|| = level x ||u|| per trajectory."""
    if level == 0:
        return u
    z = torch.randn(u.shape, generator=gen)
    scale = level * u.flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-12)
    return u + scale[:, None, None] * z


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup`` x total steps, then cosine to zero."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))


def draw_batch(data: Arrays, spec, noise_level: float, gen: torch.Generator, use_symbols: bool) -> list[torch.Tensor]:
    """One global batch: [t_obs, u_obs, t_query, target_u] (+ [skeleton, target] with symbols).

    Every rank draws the whole batch from the same generator and then keeps its part, so the random
    stream (samples, noise, query times, dropped skeletons) is the single-process one under torchrun.
    """
    lo, hi = spec.queries
    idx = torch.randint(len(data), (spec.batch_size,), generator=gen)
    clean = data.u[idx]
    noisy = redraw_noise(clean, noise_level, gen)
    n_query = int(torch.randint(lo, hi + 1, (1,), generator=gen))
    q = data.out[torch.randperm(len(data.out), generator=gen)[:n_query]]
    target_u = (noisy if spec.noisy_targets else clean)[:, q]
    t_obs = data.times[data.obs].expand(len(idx), -1)
    t_query = data.times[q].expand(len(idx), -1)
    batch = [t_obs, noisy[:, data.obs], t_query, target_u]
    if use_symbols:
        skeleton = data.skeleton[idx].clone()
        drop = torch.rand(len(idx), generator=gen) < spec.no_skeleton
        skeleton[drop] = VOCABULARY.pad_id
        skeleton[drop, 0] = VOCABULARY.bos_id
        target = data.target[idx]
        target = target[:, : int((target != VOCABULARY.pad_id).sum(1).max())]
        batch += [skeleton, target]
    return batch


def symbol_tokens(target: torch.Tensor | None) -> int:
    """Tokens the symbol loss averages over: the predicted positions that are not padding."""
    return 0 if target is None else int((target[:, 1:] != VOCABULARY.pad_id).sum())


def train_prose(model: ProseModel, data: Arrays, spec, steps: int, noise_level: float, checkpoint: Path,
                seed: int, device: torch.device, log: Callable[[str], None], desc: str) -> dict:
    """Train; resumes from ``checkpoint``. Returns the loss history and the wall time of this call.

    Under torchrun each rank takes its share of every global batch (DDP averages the gradients); the
    data loss is weighted by samples and the symbol loss by tokens, so the gradient is the global one.
    """
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    epochs = math.ceil(steps / spec.steps_per_epoch)
    trainer = Trainer(model, opt, None, checkpoint, epochs, desc)
    distributed.check_divides(spec.batch_size, "train.batch_size")
    net = distributed.wrap(model)
    use_symbols = model.cfg.symbols
    everyone = torch.arange(spec.batch_size)  # positions in the global batch
    bf16 = spec.bf16 and device.type == "cuda"
    parts: dict[str, list[float]] = {"data": [], "symbol": []}
    started = time.perf_counter()

    def epoch_fn(epoch: int) -> float:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        first, last = epoch * spec.steps_per_epoch, min(steps, (epoch + 1) * spec.steps_per_epoch)
        totals = np.zeros(3)
        for step in range(first, last):
            for group in opt.param_groups:
                group["lr"] = spec.lr * lr_factor(step, steps, spec.warmup)
            whole = draw_batch(data, spec, noise_level, gen, use_symbols)
            rows, weight = distributed.shard(everyone)
            batch = [b[rows].to(device) for b in whole]
            t_obs, u_obs, t_query, target_u = batch[:4]
            skeleton, target = batch[4:] if use_symbols else (None, None)
            whole_target = whole[5] if use_symbols else None
            token_weight = distributed.weight_for(symbol_tokens(target), symbol_tokens(whole_target), rows, everyone)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                u_pred, logits = net(t_obs, u_obs, t_query, skeleton, None if target is None else target[:, :-1])
                _, data_loss, symbol_loss = prose_loss(u_pred.float(), target_u,
                                                       None if logits is None else logits.float(),
                                                       None if target is None else target[:, 1:])
            shared = DATA_LOSS_WEIGHT * data_loss * weight + SYMBOL_LOSS_WEIGHT * symbol_loss * token_weight
            opt.zero_grad(set_to_none=True)
            shared.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.clip)
            opt.step()
            data_part = distributed.part_of_global_mean(data_loss.item(), weight)
            symbol_part = distributed.part_of_global_mean(symbol_loss.item(), token_weight)
            totals += [DATA_LOSS_WEIGHT * data_part + SYMBOL_LOSS_WEIGHT * symbol_part, data_part, symbol_part]
        totals = np.array(distributed.sum_over_ranks(*totals))
        n = max(1, last - first)
        parts["data"].append(totals[1] / n)
        parts["symbol"].append(totals[2] / n)
        log(f"{desc}: epoch {epoch + 1}/{epochs} (step {last}/{steps}) loss {totals[0] / n:.4f} "
            f"data {totals[1] / n:.4f} symbol {totals[2] / n:.4f} ({time.perf_counter() - started:.0f} s)")
        return totals[0] / n

    history = trainer.run(epoch_fn)
    model.to("cpu")
    return {"loss": history, "data_loss": parts["data"], "symbol_loss": parts["symbol"],
            "seconds": time.perf_counter() - started}

"""Shared pieces of every training loop: device, seeding, progress, checkpoint/resume, NaN guard."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from surrogate.core.store import load_weights, save_weights, tensor_state


class NonFiniteLoss(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint was kept."""


class StopTraining(Exception):
    """Raised by an epoch function to end training before its last epoch (e.g. a time budget is spent).
    The epoch that raises it is not recorded; the checkpoint of the epoch before stays the last one."""


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} was asked for, but CUDA is not available here; use device: auto or cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm bar on an interactive terminal, silent in logs and CI."""
    kwargs.setdefault("leave", False)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("disable", None)
    return tqdm(iterable, **kwargs)


def batches(n: int, batch_size: int, seed: int, epoch: int, shuffle: bool = True) -> Iterator[torch.Tensor]:
    """Index batches; the order depends only on (seed, epoch), so a resumed run sees the same batches."""
    if shuffle:
        gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
    else:
        order = torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


class Trainer:
    """Runs epochs with one checkpoint per epoch; an existing checkpoint is resumed from.

    ``epoch_fn(epoch) -> mean loss`` does the work of one epoch, or raises `StopTraining` to end early.
    The checkpoint holds the model, optimizer and scheduler states and the loss history, all plain
    tensors and numbers.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        checkpoint: Path,
        epochs: int,
        desc: str,
    ):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.checkpoint, self.epochs, self.desc = Path(checkpoint), epochs, desc
        self.history: list[float] = []

    def _resume(self) -> int:
        if not self.checkpoint.exists():
            return 0
        state = load_weights(self.checkpoint)
        self.model.load_state_dict(state["model"], strict=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and "scheduler" in state:
            self.scheduler.load_state_dict(state["scheduler"])
        self.history = [float(x) for x in state["history"]]
        return int(state["epoch"]) + 1

    def _save(self, epoch: int) -> None:
        state = {
            "model": tensor_state(self.model), "optimizer": self.optimizer.state_dict(),
            "epoch": epoch, "history": torch.tensor(self.history, dtype=torch.float64),
        }
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        save_weights(self.checkpoint, state)

    def run(self, epoch_fn: Callable[[int], float]) -> list[float]:
        start = self._resume()
        bar = progress(range(start, self.epochs), desc=self.desc, initial=start, total=self.epochs, unit="epoch")
        for epoch in bar:
            self.model.train()
            try:
                loss = float(epoch_fn(epoch))
            except StopTraining:
                break
            if not math.isfinite(loss):
                kept = f"the checkpoint of epoch {epoch} is kept at {self.checkpoint}" if epoch else "no epoch finished"
                raise NonFiniteLoss(f"{self.desc}: the loss became {loss} in epoch {epoch + 1}; {kept}. "
                                    "Lower the learning rate (train.lr) or check the data.")
            self.history.append(loss)
            if self.scheduler is not None:
                self.scheduler.step()
            self._save(epoch)
            bar.set_postfix(loss=f"{loss:.4g}")
        self.model.eval()
        return self.history

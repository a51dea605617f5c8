"""The trained surrogate as a user holds it: a method plus the coarse model it runs in."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.core.store import load_weights, read_json, save_weights, tensor_state, write_json
from surrogate.lorenz96.closures import Method, build
from surrogate.lorenz96.physics import CoarseModel, l96_tendency


def load_state(method: torch.nn.Module, state: dict) -> None:
    """Load tensors saved by `tensor_state`; every tensor of the module must be there."""
    missing, unexpected = method.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_metadata")]
    if missing or unexpected:
        raise ValueError(f"weights do not fit {type(method).__name__}: missing {missing}, unexpected {unexpected}")


class HybridModel:
    """Known slow physics + a learned (or fitted) closure, or a pure emulator.

    ``closure(X)`` takes X of shape (..., K) and returns the closure tendency: numpy in, numpy out;
    torch in, torch out (differentiable). ``rollout(X0, n_steps)`` runs the coarse model from
    X0 of shape (B, K) and returns (B, n_steps + 1, K). Normalisers live inside the method.

    A closure with memory (``memory`` > 0 lags) also needs the slow states observed just before X:
    ``closure(X, history)``, ``step(X, history=...)`` and ``rollout(X0, n, history=...)`` take
    history of shape (..., memory, K), oldest first (more states are fine: the last ones are used).
    A free run then carries the closure's own memory forward.
    """

    CHUNK = 8192  # states per forward pass when called with numpy

    def __init__(self, method: Method, F: float, dt: float, scheme: str, metadata: dict[str, Any] | None = None):
        self.method = method.eval()
        self.F, self.dt, self.scheme = F, dt, scheme
        self.metadata = dict(metadata or {})
        self.coarse = CoarseModel(F, dt, scheme, self.method)
        if self.memory and scheme != "euler":
            # the past closure is recovered from past states through the forward-Euler residual
            raise ValueError(f"{method.kind} has memory and needs the forward-Euler coarse model "
                             f"(coarse: {{scheme: euler, target: residual}}), not {scheme!r}")

    @property
    def memory(self) -> int:
        """Past states the closure needs besides the current one (0: Markovian)."""
        return int(getattr(self.method, "memory", 0))

    @property
    def role(self) -> str:
        return self.method.role

    def to(self, device) -> "HybridModel":
        self.method.to(device)
        return self

    @property
    def device(self) -> torch.device:
        buf = next(iter(self.method.buffers()), None)
        par = next(iter(self.method.parameters()), None)
        t = par if par is not None else buf
        return t.device if t is not None else torch.device("cpu")

    def _check(self, X, name: str) -> None:
        if X.ndim < 1:
            raise ValueError(f"expected {name} with shape (..., K), got a scalar")

    def _check_history(self, X, history, name: str = "X"):
        """The last `memory` states of history, checked against X; None for a Markovian closure."""
        if not self.memory:
            if history is not None:
                raise TypeError(f"{self.method.kind} is Markovian and takes no history")
            return None
        if history is None:
            raise ValueError(f"{self.method.kind} has memory: pass history, the {self.memory} slow states "
                             f"just before {name}, shape (..., {self.memory}, K), oldest first")
        shape = tuple(X.shape)
        if (history.ndim != len(shape) + 1 or tuple(history.shape[:-2]) != shape[:-1]
                or history.shape[-1] != shape[-1] or history.shape[-2] < self.memory):
            raise ValueError(f"expected history with shape {(*shape[:-1], self.memory, shape[-1])} for {name} "
                             f"of shape {shape}, got {tuple(history.shape)}")
        return history[..., -self.memory :, :]

    def initial_memory(self, history: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        """The closure's departures from its Markovian part at the `memory` steps before X, newest first.

        The past closure is the forward-Euler residual of consecutive states,
        f_{t-1} = (X_t - X_{t-1})/dt - N(X_{t-1}), so observed past states are all it takes.
        """
        states = torch.cat([history, X[..., None, :]], dim=-2)
        before = states[..., :-1, :]
        f = (states[..., 1:, :] - before) / self.dt - l96_tendency(before, self.F)
        return (f - self.method(before)).flip(-2)

    def _closure(self, X, history):
        if history is None:
            return self.method(X)
        return self.method(X, self.initial_memory(history, X))

    def closure(self, X, history=None):
        if self.role != "closure":
            raise TypeError(f"{self.method.kind} is an emulator and has no closure; use step() or rollout()")
        self._check(X, "X")
        if isinstance(X, torch.Tensor):
            return self._closure(X, self._check_history(X, history))
        X = np.asarray(X, dtype=np.float64)
        hist = self._check_history(X, None if history is None else np.asarray(history, dtype=np.float64))
        flat = X.reshape(-1, X.shape[-1])
        flat_hist = None if hist is None else hist.reshape(-1, *hist.shape[-2:])
        out = np.empty_like(flat)
        with torch.inference_mode():  # in chunks: a network's activations for 10^5 states would not fit
            for start in range(0, len(flat), self.CHUNK):
                part = slice(start, start + self.CHUNK)
                chunk = torch.as_tensor(flat[part], device=self.device)
                h = None if flat_hist is None else torch.as_tensor(flat_hist[part], device=self.device)
                out[part] = self._closure(chunk, h).cpu().numpy()
        return out.reshape(X.shape)

    def step(self, X, noise=0.0, history=None):
        """One coarse step of size dt (torch in, torch out; differentiable)."""
        if self.role == "emulator":
            return self.method(X)
        history = self._check_history(X, history)
        if history is not None:
            return X + self.dt * (l96_tendency(X, self.F) + self._closure(X, history))
        return self.coarse.step(X, noise)

    def memory_step(self, X: torch.Tensor, past: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward-Euler step of a closure with memory, carrying its departures (newest first).

        The departure at X is the closure's own memory term, so no past state is evaluated again.
        """
        term = self.method.memory_term(past)
        X_next = X + self.dt * (l96_tendency(X, self.F) + self.method(X) + term)
        return X_next, torch.cat([term[..., None, :], past[..., :-1, :]], dim=-2)

    def rollout(self, X0, n_steps: int, record_every: int = 1, seed: int = 0, bar=None,
                history=None) -> np.ndarray:
        """Free run from X0 (B, K); every `record_every`-th state, the initial state first.

        A closure with memory starts from history (B, memory, K), the states observed before X0.
        """
        X0 = np.asarray(X0, dtype=np.float64)
        if X0.ndim != 2:
            raise ValueError(f"expected X0 with shape (B, K), got {X0.shape}")
        hist = self._check_history(X0, None if history is None else np.asarray(history, dtype=np.float64),
                                   "X0")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        X = torch.as_tensor(X0, device=self.device)
        noise = torch.zeros_like(X)
        out = [X0]
        with torch.inference_mode():
            past = None if hist is None else self.initial_memory(torch.as_tensor(hist, device=self.device), X)
            for i in range(1, n_steps + 1):
                if past is not None:
                    X, past = self.memory_step(X, past)
                else:
                    if self.method.stochastic:
                        noise = self.method.noise_step(noise, gen)
                    X = self.step(X, noise)
                if i % record_every == 0:
                    out.append(X.cpu().numpy())
                if bar is not None:
                    bar.update(1)
        return np.stack(out, axis=1)

    # persistence: <name>.json (constructor arguments, coarse model) + <name>.pt (state dict)
    def save(self, folder: str | Path, name: str) -> None:
        folder = Path(folder)
        save_weights(folder / f"{name}.pt", tensor_state(self.method))
        write_json(folder / f"{name}.json", {
            "kind": self.method.kind, "role": self.role, "init_args": self.method.init_args,
            "F": self.F, "dt": self.dt, "scheme": self.scheme, "metadata": self.metadata,
        })

    @classmethod
    def load(cls, folder: str | Path, name: str, device: str | torch.device = "cpu") -> "HybridModel":
        folder = Path(folder)
        spec = read_json(folder / f"{name}.json")
        method = build(spec["kind"], spec["init_args"])
        load_state(method, load_weights(folder / f"{name}.pt"))
        return cls(method.to(device), spec["F"], spec["dt"], spec["scheme"], spec.get("metadata"))

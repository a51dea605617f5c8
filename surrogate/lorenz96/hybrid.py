"""The trained surrogate as a user holds it: a method plus the coarse model it runs in."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from surrogate.core.store import load_weights, read_json, save_weights, tensor_state, write_json
from surrogate.lorenz96.closures import Method, build
from surrogate.lorenz96.physics import CoarseModel


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
    """

    CHUNK = 8192  # states per forward pass when called with numpy

    def __init__(self, method: Method, F: float, dt: float, scheme: str, metadata: dict[str, Any] | None = None):
        self.method = method.eval()
        self.F, self.dt, self.scheme = F, dt, scheme
        self.metadata = dict(metadata or {})
        self.coarse = CoarseModel(F, dt, scheme, self.method)

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

    def closure(self, X):
        if self.role != "closure":
            raise TypeError(f"{self.method.kind} is an emulator and has no closure; use step() or rollout()")
        self._check(X, "X")
        if isinstance(X, torch.Tensor):
            return self.method(X)
        X = np.asarray(X, dtype=np.float64)
        flat = X.reshape(-1, X.shape[-1])
        out = np.empty_like(flat)
        with torch.inference_mode():  # in chunks: a network's activations for 10^5 states would not fit
            for start in range(0, len(flat), self.CHUNK):
                chunk = torch.as_tensor(flat[start : start + self.CHUNK], device=self.device)
                out[start : start + self.CHUNK] = self.method(chunk).cpu().numpy()
        return out.reshape(X.shape)

    def step(self, X, noise=0.0):
        """One coarse step of size dt (torch in, torch out; differentiable)."""
        if self.role == "emulator":
            return self.method(X)
        return self.coarse.step(X, noise)

    def rollout(self, X0, n_steps: int, record_every: int = 1, seed: int = 0, bar=None) -> np.ndarray:
        """Free run from X0 (B, K); every `record_every`-th state, the initial state first."""
        X0 = np.asarray(X0, dtype=np.float64)
        if X0.ndim != 2:
            raise ValueError(f"expected X0 with shape (B, K), got {X0.shape}")
        gen = torch.Generator(device=self.device).manual_seed(seed)
        X = torch.as_tensor(X0, device=self.device)
        noise = torch.zeros_like(X)
        out = [X0]
        with torch.inference_mode():
            for i in range(1, n_steps + 1):
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

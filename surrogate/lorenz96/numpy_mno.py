"""The MNO closure as plain numpy: rfft, per-mode complex products and pointwise layers.

This file needs only numpy and scipy (for erf), so it can be copied next to a numpy simulation
and used without torch. It reads the `.npz` written by `surrogate export RUN --format numpy`:

    closure = NumpyMNO.load("mno.npz")
    U = closure(X)          # X (..., K) -> closure tendency (..., K), float64

It mirrors neuraloperator's 1D FNO (lifting MLP, Fourier layers with a linear skip, a channel MLP
with a soft-gating skip, projection MLP, exact GELU) and the normalisers of the trained closure.
At a ring size K other than the trained one the spectral weights are interpolated to the same
physical wavenumbers, as the torch model does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.special import erf


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def pointwise(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A 1x1 convolution: (B, C_in, K) with weight (C_out, C_in) -> (B, C_out, K)."""
    y = np.einsum("oi,bik->bok", weight, x)
    return y if bias is None else y + bias[:, None]


def remap_modes(weight: np.ndarray, n_out: int, scale: float) -> np.ndarray:
    """Spectral weights (..., n_in) sampled at modes m * scale, linearly interpolated, for m < n_out."""
    pos = np.arange(n_out) * scale
    lo = np.minimum(np.floor(pos).astype(int), weight.shape[-1] - 1)
    hi = np.minimum(lo + 1, weight.shape[-1] - 1)
    frac = np.clip(pos - lo, 0.0, 1.0)
    return weight[..., lo] * (1 - frac) + weight[..., hi] * frac


class NumpyMNO:
    """A trained ring FNO closure (or emulator increment) as arrays."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.a = {k: np.asarray(v) for k, v in arrays.items()}
        self.layers = int(self.a["layers"])
        self.ring_size = int(self.a["ring_size"])  # 0: no trained ring size, modes are used as they are
        self.residual = bool(self.a["residual"])  # an emulator returns X + increment

    @classmethod
    def load(cls, path: str | Path) -> "NumpyMNO":
        with np.load(path, allow_pickle=False) as f:
            return cls(dict(f))

    def _mlp(self, prefix: str, x: np.ndarray) -> np.ndarray:
        x = gelu(pointwise(x, self.a[f"{prefix}.0.weight"], self.a[f"{prefix}.0.bias"]))
        return pointwise(x, self.a[f"{prefix}.1.weight"], self.a[f"{prefix}.1.bias"])

    def _spectral(self, i: int, x: np.ndarray) -> np.ndarray:
        K = x.shape[-1]
        weight = self.a[f"spectral.{i}.weight"]  # (C_in, C_out, modes), complex
        if self.ring_size and self.ring_size != K:
            weight = remap_modes(weight, K // 2 + 1, self.ring_size / K)
        x_hat = np.fft.rfft(x, axis=-1, norm="forward")
        m = min(weight.shape[-1], x_hat.shape[-1])
        out_hat = np.zeros((x.shape[0], weight.shape[1], x_hat.shape[-1]), dtype=np.complex128)
        out_hat[..., :m] = np.einsum("bik,iok->bok", x_hat[..., :m], weight[..., :m])
        return np.fft.irfft(out_hat, n=K, axis=-1, norm="forward") + self.a[f"spectral.{i}.bias"]

    def net(self, z: np.ndarray) -> np.ndarray:
        """(B, K) normalised -> (B, K) normalised."""
        x = self._mlp("lifting", z[:, None, :])
        for i in range(self.layers):
            last = i == self.layers - 1
            skip_fno = pointwise(x, self.a[f"skip.{i}.weight"], None)
            skip_mlp = self.a[f"gate.{i}.weight"] * x
            x = self._spectral(i, x) + skip_fno
            if not last:
                x = gelu(x)
            x = self._mlp(f"channel_mlp.{i}", x) + skip_mlp
            if not last:
                x = gelu(x)
        return self._mlp("projection", x)[:, 0, :]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim < 1 or not np.isfinite(X).all():
            raise ValueError(f"expected finite X with shape (..., K), got shape {X.shape}")
        flat = X.reshape(-1, X.shape[-1])
        z = (flat - self.a["x_mean"]) / self.a["x_std"]
        out = (self.net(z) * self.a["y_std"] + self.a["y_mean"]).reshape(X.shape)
        return X + out if self.residual else out

"""Closures for the slow Lorenz96 variables, and the emulators they are compared with.

Every method is a torch module whose forward maps the slow state X (..., K) to a tendency (a closure)
or to the next state (an emulator). Learned state, normalisers included, lives in the state dict;
the constructor arguments are plain JSON. So a method is saved as weights + JSON and nothing else.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from surrogate.core.registry import Registry

METHODS: Registry[type["Method"]] = Registry("Lorenz96 method")


class Method(nn.Module):
    """Base of closures (role "closure": X -> tendency) and emulators (role "emulator": X_t -> X_{t+dt})."""

    role = "closure"
    trainable = False  # trained by gradient descent (else fitted in closed form)
    stochastic = False

    def __init__(self, **init_args: Any):
        super().__init__()
        self.init_args = dict(init_args)

    @property
    def kind(self) -> str:
        return type(self).kind_name

    def fit_closed_form(self, X: np.ndarray, target: np.ndarray) -> None:
        """Fit from (trajectory, time, K) arrays; trainable methods only set their normalisers here."""

    def noise_step(self, e: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
        return e


def _register(name: str):
    def deco(cls):
        cls.kind_name = name
        return METHODS.register(name)(cls)

    return deco


@_register("null")
class NullClosure(Method):
    """No closure: the slow equation alone."""

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(X)


@_register("climatology")
class Climatology(Method):
    """Forecasts the climatological mean of X, whatever the initial state."""

    role = "emulator"

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.zeros((), dtype=torch.float64))

    def fit_closed_form(self, X, target):
        self.mean.fill_(float(np.mean(X)))

    def forward(self, X):
        return torch.full_like(X, float(self.mean))


@_register("polynomial")
class PolynomialClosure(Method):
    """U_k = sum_i a_i X_k^i fitted by least squares, pooled over sites and times (Wilks 2005,
    Arnold et al. 2013); with ``ar1`` an additive AR(1) noise fitted to the residuals."""

    def __init__(self, degree: int = 3, ar1: bool = False):
        super().__init__(degree=degree, ar1=ar1)
        self.degree = degree
        self.stochastic = ar1
        self.register_buffer("coef", torch.zeros(degree + 1, dtype=torch.float64))
        self.register_buffer("phi", torch.zeros((), dtype=torch.float64))
        self.register_buffer("sigma", torch.zeros((), dtype=torch.float64))

    def fit_closed_form(self, X, target):
        x, u = X.ravel(), target.ravel()
        A = np.vander(x, self.degree + 1, increasing=True)
        coef, *_ = np.linalg.lstsq(A, u, rcond=None)
        self.coef.copy_(torch.from_numpy(coef))
        if self.stochastic:
            r = target - np.polynomial.polynomial.polyval(X, coef)  # (traj, time, K)
            self.phi.fill_(float(np.sum(r[:, 1:] * r[:, :-1]) / np.sum(r[:, :-1] ** 2)))
            self.sigma.fill_(float(r.std()))

    def forward(self, X):
        out = torch.zeros_like(X)
        for a in reversed(self.coef.to(X.dtype)):
            out = out * X + a
        return out

    def noise_step(self, e, gen):
        if not self.stochastic:
            return e
        z = torch.randn(e.shape, generator=gen, dtype=e.dtype, device=e.device)
        phi = float(self.phi)
        return phi * e + float(self.sigma) * (1 - phi**2) ** 0.5 * z


class NormalisedNet(Method):
    """A network applied to standardised inputs, with its output mapped back to physical units.

    The four normaliser scalars are buffers, so they are saved and loaded with the weights.
    ``normalise=False`` keeps them at (0, 1), which is what the MNO paper's recipe does.
    """

    trainable = True

    def __init__(self, normalise: bool = True, **init_args: Any):
        super().__init__(normalise=normalise, **init_args)
        self.normalise = normalise
        for name, value in (("x_mean", 0.0), ("x_std", 1.0), ("y_mean", 0.0), ("y_std", 1.0)):
            self.register_buffer(name, torch.tensor(value, dtype=torch.float64))

    def output_of(self, X: np.ndarray, target: np.ndarray) -> np.ndarray:
        """What the network's output is normalised against (the closure target by default)."""
        return target

    def fit_closed_form(self, X, target):
        if self.normalise:
            y = self.output_of(X, target)
            self.x_mean.fill_(float(X.mean()))
            self.x_std.fill_(float(X.std()))
            self.y_mean.fill_(float(y.mean()))
            self.y_std.fill_(float(y.std()))

    def net(self, z: torch.Tensor) -> torch.Tensor:  # (B, K) -> (B, K), normalised
        raise NotImplementedError

    def forward(self, X):
        shape = X.shape
        param = next(self.parameters())
        z = ((X - self.x_mean) / self.x_std).to(param.dtype).reshape(-1, shape[-1])
        out = self.net(z).reshape(shape).to(X.dtype)
        return out * self.y_std.to(X.dtype) + self.y_mean.to(X.dtype)


@_register("local_mlp")
class LocalMLP(NormalisedNet):
    """The same small MLP at every site: U_k = g(X_k) (the MNO paper's local FCNN baseline)."""

    def __init__(self, hidden: list[int] | tuple[int, ...] = (32, 32), normalise: bool = True):
        super().__init__(normalise=normalise, hidden=list(hidden))
        layers: list[nn.Module] = []
        width = 1
        for h in hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def net(self, z):
        return self.mlp(z[..., None])[..., 0]


def _fno(modes: int, width: int, layers: int) -> nn.Module:
    try:
        from neuralop.models import FNO
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ImportError("the MNO closure needs neuraloperator: pip install 'surrogate[lorenz96]'") from err
    # positional_embedding=None keeps the operator equivariant to shifts on the periodic ring,
    # which is what lets a model trained at one K run at another.
    return FNO(n_modes=(modes,), in_channels=1, out_channels=1, hidden_channels=width, n_layers=layers,
               positional_embedding=None)


class RingFNO(NormalisedNet):
    """An FNO on the periodic ring of Lorenz96 sites.

    In Lorenz96 K is the length of the ring, not its resolution: the sites keep their spacing when K
    grows. The FNO indexes its Fourier modes relative to the length of its input, so at another K
    its spectral weights would act on the wrong physical wavenumbers. Given the ring size it was
    trained at (`ring_size`), it runs at any other K with its spectral weights interpolated to the
    same physical wavenumbers (mode m at K sits at m * ring_size / K of the trained ring).
    """

    def __init__(self, modes: int = 8, width: int = 64, layers: int = 4, normalise: bool = True,
                 ring_size: int | None = None, **extra: Any):
        super().__init__(normalise=normalise, modes=modes, width=width, layers=layers, ring_size=ring_size,
                         **extra)
        self.ring_size = ring_size
        self.fno = _fno(modes, width, layers)
        self._resized: dict[tuple, nn.Module] = {}  # (K, weight version, device) -> remapped FNO

    def _fno_at(self, K: int) -> nn.Module:
        if self.ring_size in (None, K):
            return self.fno
        first = self.fno.fno_blocks.convs[0].weight.tensor
        key = (K, first._version, str(first.device))  # the version changes when training updates the weights
        if key not in self._resized:
            args = self.init_args
            resized = _fno(K, args["width"], args["layers"]).to(next(self.fno.parameters()).device)
            state = resized.state_dict()
            for name, value in self.fno.state_dict().items():
                if not isinstance(value, torch.Tensor):
                    continue
                if name.startswith("fno_blocks.convs.") and name.endswith("weight.tensor"):
                    state[name] = _remap_modes(value, state[name].shape[-1], self.ring_size / K)
                else:
                    state[name] = value
            resized.load_state_dict({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, strict=False)
            self._resized = {key: resized.eval()}  # keep one: the last ring size asked for
        return self._resized[key]

    def net(self, z):
        return self._fno_at(z.shape[-1])(z[:, None, :])[:, 0, :]


def _remap_modes(weight: torch.Tensor, n_out: int, scale: float) -> torch.Tensor:
    """Spectral weights (..., n_in) sampled at modes m * scale, linearly interpolated, for m < n_out."""
    pos = torch.arange(n_out, dtype=torch.float64) * scale
    lo = pos.floor().long().clamp(max=weight.shape[-1] - 1)
    hi = (lo + 1).clamp(max=weight.shape[-1] - 1)
    frac = (pos - lo).clamp(0, 1).to(weight.real.dtype).to(weight.device)
    return weight[..., lo] * (1 - frac) + weight[..., hi] * frac


@_register("mno")
class MNOClosure(RingFNO):
    """Multiscale Neural Operator: a 1D Fourier neural operator over the whole ring, X -> U."""


@_register("mno_memory")
class MemoryMNO(RingFNO):
    """The MNO with memory: a non-Markovian closure f_t = M(X_t) + sum_i a_i r_{t-i}.

    M is the Markovian MNO (this module's FNO). r_{t-i} = f_{t-i} - M(X_{t-i}) is how far the closure
    departed from M i steps back; with the forward-Euler residual target it follows from past slow
    states alone, f_{t-1} = (X_t - X_{t-1})/dt - N(X_{t-1}). The fast variables, which X_t does not
    determine, leave a departure that stays correlated for some 10-20 coarse steps; the linear
    autoregression a (one coefficient per lag, the same at every site: the AR term of Wilks 2005,
    deterministic and of higher order) carries it forward. In a free run the departures are the
    model's own memory terms. ``memory`` is the number of lags.

    ``forward(X, past)`` takes the departures newest first, shape (..., memory, K); without ``past``
    it returns M(X), which is what offline training fits before ``fit_memory``.
    """

    def __init__(self, modes: int = 8, width: int = 64, layers: int = 4, normalise: bool = True,
                 ring_size: int | None = None, memory: int = 8):
        super().__init__(modes, width, layers, normalise, ring_size, memory=memory)
        if memory < 1:
            raise ValueError(f"memory must be at least 1 lag, got {memory}")
        self.memory = memory
        self.register_buffer("ar", torch.zeros(memory, dtype=torch.float64))

    def memory_term(self, past: torch.Tensor) -> torch.Tensor:
        """sum_i a_i r_{t-i} from past departures (..., memory, K), newest first."""
        return torch.einsum("...hk,h->...k", past, self.ar.to(past.dtype))

    def forward(self, X, past=None):
        markov = super().forward(X)
        return markov if past is None else markov + self.memory_term(past)

    def fit_memory(self, X: np.ndarray, target: np.ndarray, chunk: int = 65536) -> None:
        """Least-squares lag coefficients on consecutive training samples (trajectory, time, K).

        The departures are those of the true closure from the trained M; every site and time of the
        training trajectories with `memory` predecessors is one equation.
        """
        n_traj, n_time, K = X.shape
        if n_time <= self.memory:
            raise ValueError(f"memory={self.memory} needs training trajectories longer than {self.memory} samples")
        flat = X.reshape(-1, K)
        markov = np.empty_like(flat)
        param = next(self.parameters())
        with torch.inference_mode():
            for start in range(0, len(flat), chunk):
                part = torch.as_tensor(flat[start : start + chunk], device=param.device)
                markov[start : start + chunk] = super().forward(part).cpu().numpy()
        r = target - markov.reshape(X.shape)
        H = self.memory
        lags = np.stack([r[:, H - 1 - i : n_time - 1 - i] for i in range(H)], axis=-1)  # newest first
        coef, *_ = np.linalg.lstsq(lags.reshape(-1, H), r[:, H:].ravel(), rcond=None)
        self.ar.copy_(torch.from_numpy(coef))


@_register("pure_fno")
class PureFNO(RingFNO):
    """A pure-ML emulator with no physics: the same FNO maps X_t to the increment X_{t+dt} - X_t."""

    role = "emulator"

    def output_of(self, X, target):
        return X[:, 1:] - X[:, :-1]

    def forward(self, X):
        return X + super().forward(X)


def build(kind: str, init_args: dict[str, Any]) -> Method:
    return METHODS[kind](**init_args)

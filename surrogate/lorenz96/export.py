"""Exports of a trained Lorenz96 closure: pure numpy (`numpy_mno.py` + arrays) and TorchScript.

TorchScript is what FTorch loads to call the closure from Fortran; see `apps/ftorch_closure.md`.
"""
from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from surrogate.core.export import relative_error
from surrogate.core.methods import method_name
from surrogate.core.store import RunFolder, write_json
from surrogate.lorenz96 import numpy_mno
from surrogate.lorenz96.closures import RingFNO
from surrogate.lorenz96.hybrid import HybridModel


def _model(run: RunFolder, method: str | None) -> HybridModel:
    model_dir = run.path / "model"
    model = HybridModel.load(model_dir, method_name(model_dir, method))
    if model.memory:  # the exports take X alone; the memory term and its history are not carried yet
        raise ValueError(f"{model.method.kind} (a closure with memory) cannot be exported yet; "
                         "export a Markovian closure such as mno")
    return model


def _test_states(K: int, n: int = 64) -> np.ndarray:
    # the attractor's range (mean about 2.5, spread about 3.6 at F = 10)
    return np.random.default_rng(0).normal(2.5, 3.6, size=(n, K))


def _ring_size(model: HybridModel) -> int:
    return int(model.metadata.get("K_trained") or model.method.ring_size or 0)


def fno_arrays(method: RingFNO) -> dict[str, np.ndarray]:
    """The weights of a ring FNO under the names `numpy_mno` reads."""
    args = method.init_args
    if args.get("layers") is None or not isinstance(method, RingFNO):
        raise ValueError(f"the numpy export covers the FNO closures (mno, pure_fno), not {method.kind!r}")
    state = {k: v.detach().cpu() for k, v in method.fno.state_dict().items() if isinstance(v, torch.Tensor)}
    a: dict[str, np.ndarray] = {
        "layers": np.array(args["layers"]),
        "ring_size": np.array(method.ring_size or 0),
        "residual": np.array(method.role == "emulator"),
    }
    for name in ("x_mean", "x_std", "y_mean", "y_std"):
        a[name] = getattr(method, name).detach().cpu().numpy()
    for part in ("lifting", "projection"):
        for j in (0, 1):
            a[f"{part}.{j}.weight"] = state[f"{part}.fcs.{j}.weight"][..., 0].numpy()
            a[f"{part}.{j}.bias"] = state[f"{part}.fcs.{j}.bias"].numpy()
    for i in range(args["layers"]):
        blocks = "fno_blocks"
        a[f"spectral.{i}.weight"] = state[f"{blocks}.convs.{i}.weight.tensor"].numpy()
        a[f"spectral.{i}.bias"] = state[f"{blocks}.convs.{i}.bias"].numpy()
        a[f"skip.{i}.weight"] = state[f"{blocks}.fno_skips.{i}.conv.weight"][..., 0].numpy()
        a[f"gate.{i}.weight"] = state[f"{blocks}.channel_mlp_skips.{i}.weight"][0].numpy()
        for j in (0, 1):
            a[f"channel_mlp.{i}.{j}.weight"] = state[f"{blocks}.channel_mlp.{i}.fcs.{j}.weight"][..., 0].numpy()
            a[f"channel_mlp.{i}.{j}.bias"] = state[f"{blocks}.channel_mlp.{i}.fcs.{j}.bias"].numpy()
    return a


def _seconds_per_call(fn, x, repeats: int = 200) -> float:
    fn(x)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(x)
    return (time.perf_counter() - start) / repeats


def to_numpy(run: RunFolder, out: Path, method: str | None) -> dict:
    model = _model(run, method)
    name = model.metadata.get("method", method or "surrogate")
    np.savez(out / f"{name}.npz", **fno_arrays(model.method))
    shutil.copy(numpy_mno.__file__, out / "numpy_mno.py")  # the forward pass travels with its weights
    loaded = numpy_mno.NumpyMNO.load(out / f"{name}.npz")
    K = _ring_size(model) or 8
    X = _test_states(K)
    reference = model.closure(X) if model.role == "closure" else model.step(torch.as_tensor(X)).numpy()
    with torch.inference_mode():
        single = torch.as_tensor(X[:1])
        t_torch = _seconds_per_call(lambda x: model.method(x), single)
    t_numpy = _seconds_per_call(loaded, X[:1])
    return {"format": "numpy", "files": [f"{name}.npz", "numpy_mno.py"], "K": K,
            "max_rel_error": relative_error(loaded(X), reference),
            "tolerance": 1e-5,  # the trained weights are float32; numpy runs them in float64
            "seconds_per_state_numpy": t_numpy, "seconds_per_state_torch": t_torch}


class _Closure(torch.nn.Module):
    """X (B, K) float64 -> closure tendency (or next state for an emulator), float64."""

    def __init__(self, model: HybridModel):
        super().__init__()
        self.method = model.method

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.method(X)


def to_torchscript(run: RunFolder, out: Path, method: str | None) -> dict:
    model = _model(run, method)
    K = _ring_size(model) or 8
    X = torch.as_tensor(_test_states(K))
    with warnings.catch_warnings():  # torch.jit is deprecated in torch, but it is the format FTorch reads
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(_Closure(model).eval(), X[:1], check_trace=False)
        traced.save(str(out / "closure.pt"))
        loaded = torch.jit.load(str(out / "closure.pt"))
    with torch.inference_mode():
        reference = _Closure(model)(X).numpy()
        got = loaded(X).numpy()
    write_json(out / "signature.json", {"input": {"name": "X", "shape": ["batch", K], "dtype": "float64"},
                                        "output": {"shape": ["batch", K], "dtype": "float64"},
                                        "role": model.role, "F": model.F, "dt": model.dt})
    return {"format": "torchscript", "files": ["closure.pt", "signature.json"], "K": K,
            "max_rel_error": relative_error(got, reference), "tolerance": 1e-5}


FORMATS = {"numpy": to_numpy, "torchscript": to_torchscript}

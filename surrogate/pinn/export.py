"""Exports of a trained solution field u(x): TorchScript and ONNX, points (P, D) in, u (P,) out.

Both export the dense Gaussian embedding: the local evaluation (`local_cutoff`) sorts points and
gathers data-dependent windows, which neither format carries; dense and local agree to the
neglected exp(-cutoff^2 / 2) terms, so the check compares against the dense field.
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import torch

from surrogate.core.export import relative_error
from surrogate.core.methods import method_name
from surrogate.core.store import RunFolder, write_json
from surrogate.pinn.field import FieldModel
from surrogate.pinn.pig import PIG


class _U(torch.nn.Module):
    """u of shape (P,) whatever the network's own output shape."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).reshape(-1)


def _field(run: RunFolder, method: str | None) -> tuple[FieldModel, torch.nn.Module]:
    model_dir = run.path / "model"
    field = FieldModel.load(model_dir, method_name(model_dir, method))
    module = copy.deepcopy(field.module).eval()
    if isinstance(module, PIG) and module.config.get("local_cutoff"):
        module.config = {**module.config, "local_cutoff": None}
    return field, _U(module)


def _test_points(field: FieldModel, n: int = 512) -> torch.Tensor:
    lower, upper = field.problem.lower, field.problem.upper
    x = np.random.default_rng(0).uniform(lower, upper, size=(n, len(lower)))
    return torch.as_tensor(x, dtype=field.dtype)


def _signature(out: Path, field: FieldModel, dtype: torch.dtype) -> None:
    write_json(out / "signature.json", {
        "input": {"name": "x", "shape": ["points", len(field.coords)], "columns": list(field.coords),
                  "bounds": {c: list(b) for c, b in field.problem.bounds.items()},
                  "dtype": str(dtype).removeprefix("torch.")},
        "output": {"name": "u", "shape": ["points"]}, "problem": field.problem_spec, "kind": field.kind})


def _tolerance(dtype: torch.dtype) -> float:
    return 1e-6 if dtype == torch.float64 else 1e-5


def to_torchscript(run: RunFolder, out: Path, method: str | None) -> dict:
    field, module = _field(run, method)
    x = _test_points(field)
    with warnings.catch_warnings():  # torch.jit is deprecated in torch, but it is what C++/Fortran hosts load
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module, x[:8], check_trace=False)
        traced.save(str(out / "field.pt"))
        loaded = torch.jit.load(str(out / "field.pt"))
    with torch.no_grad():
        error = relative_error(loaded(x).numpy(), field(x.numpy()))
    _signature(out, field, field.dtype)
    return {"format": "torchscript", "files": ["field.pt", "signature.json"], "max_rel_error": error,
            "tolerance": _tolerance(field.dtype)}


def to_onnx(run: RunFolder, out: Path, method: str | None) -> dict:
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ValueError("the onnx export needs onnx and onnxruntime: pip install onnx onnxruntime") from err
    field, module = _field(run, method)
    x = _test_points(field)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x[:8],), str(out / "field.onnx"), input_names=["x"], output_names=["u"],
                          dynamic_axes={"x": {0: "points"}, "u": {0: "points"}}, dynamo=False)
    session = onnxruntime.InferenceSession(str(out / "field.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["u"], {"x": x.numpy()})[0]
    _signature(out, field, field.dtype)
    return {"format": "onnx", "files": ["field.onnx", "signature.json"],
            "max_rel_error": relative_error(got, field(x.numpy())), "tolerance": _tolerance(field.dtype)}


FORMATS = {"torchscript": to_torchscript, "onnx": to_onnx}

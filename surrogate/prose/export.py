"""Exports of a trained PROSE model.

TorchScript (`operator.pt`, and `symbols.pt` for a model that writes equations):
- operator.pt: (t_obs (B, N), u_obs (B, N, 3), t_query (B, Q)[, skeleton ids (B, S)]) -> u (B, Q, 3),
  with N = the model's number of input points and times relative to the first observation (as
  `ProseSurrogate.predict` feeds them);
- symbols.pt: (t_obs, u_obs, skeleton ids, prefix ids (B, L)) -> next-token logits (B, L, V). The
  greedy loop (append the argmax until <EOS>) stays with the caller: a loop whose length depends on
  the data is not something a traced graph carries. `vocabulary.json` maps ids to tokens.
ONNX (`operator.onnx`): the operator path, checked with onnxruntime.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from surrogate.core.export import relative_error
from surrogate.core.methods import method_name
from surrogate.core.store import RunFolder, write_json
from surrogate.prose.odes import get_family, integrate, time_grid
from surrogate.prose.predictor import ProseSurrogate
from surrogate.prose.symbols import VOCABULARY, to_tokens


class _Operator(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, t_obs, u_obs, t_query, skeleton=None):
        data, _, _ = self.model.encode(t_obs, u_obs, skeleton)
        return self.model.operate(data, t_query)


class _SymbolStep(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, t_obs, u_obs, skeleton, prefix):
        _, text, text_pad = self.model.encode(t_obs, u_obs, skeleton)
        return self.model.symbol_logits(text, text_pad, prefix)


def _example(surrogate: ProseSurrogate, batch: int = 2):
    """Inputs as `predict` builds them, from two Lorenz trajectories."""
    family = get_family("lorenz")
    times = time_grid()
    u = integrate(family, np.repeat(family.nominal_values[None], batch, 0),
                  np.array([[1.0, -1.0, 0.5], [-0.5, 0.8, 1.2]])[:batch], times)
    observed = times <= 2.0 + 1e-12
    keep = np.round(np.linspace(0, observed.sum() - 1, surrogate.n_input)).astype(int)
    t_obs = torch.tensor(np.repeat(times[observed][keep][None], batch, 0), dtype=torch.float32)
    u_obs = torch.tensor(u[:, observed][:, keep], dtype=torch.float32)
    t_query = torch.tensor(np.repeat(times[~observed][None], batch, 0), dtype=torch.float32)
    ids = VOCABULARY.encode(to_tokens(family.skeleton()))
    skeleton = torch.tensor(np.repeat(np.asarray(ids)[None], batch, 0), dtype=torch.long)
    return t_obs, u_obs, t_query, skeleton


def _load(run: RunFolder, method: str | None) -> ProseSurrogate:
    model_dir = run.path / "model"
    return ProseSurrogate.load(model_dir, method_name(model_dir, method))


def _trace(module, inputs, path: Path):
    with warnings.catch_warnings():  # torch.jit is deprecated in torch, but it is what C++ and Fortran hosts load
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(module.eval(), inputs, check_trace=False)
        traced.save(str(path))
        return torch.jit.load(str(path))


def _signature(out: Path, surrogate: ProseSurrogate) -> None:
    write_json(out / "signature.json", {
        "n_input": surrogate.n_input, "dim": surrogate.dim, "symbols": bool(surrogate.model_.cfg.symbols),
        "times": "relative to the first observation; n_input evenly spaced observations of t in [0, 2]",
        "operator": ["t_obs (B, n_input)", "u_obs (B, n_input, dim)", "t_query (B, Q)", "skeleton ids (B, S)"],
    })
    write_json(out / "vocabulary.json", {"tokens": list(VOCABULARY.words), "bos": VOCABULARY.bos_id,
                                         "eos": VOCABULARY.eos_id, "pad": VOCABULARY.pad_id})


def to_torchscript(run: RunFolder, out: Path, method: str | None) -> dict:
    surrogate = _load(run, method)
    model = surrogate.model_.eval()
    t_obs, u_obs, t_query, skeleton = _example(surrogate)
    args = (t_obs, u_obs, t_query, skeleton) if model.cfg.symbols else (t_obs, u_obs, t_query)
    operator = _trace(_Operator(model), args, out / "operator.pt")
    with torch.no_grad():
        errors = [relative_error(operator(*args).numpy(), _Operator(model)(*args).numpy())]
    files = ["operator.pt", "signature.json", "vocabulary.json"]
    if model.cfg.symbols:
        prefix = torch.full((len(t_obs), 1), VOCABULARY.bos_id, dtype=torch.long)
        prefix = torch.cat([prefix, skeleton[:, :5]], dim=1)  # any prefix: logits at every position are checked
        step = _trace(_SymbolStep(model), (t_obs, u_obs, skeleton, prefix), out / "symbols.pt")
        with torch.no_grad():
            errors.append(relative_error(step(t_obs, u_obs, skeleton, prefix).numpy(),
                                         _SymbolStep(model)(t_obs, u_obs, skeleton, prefix).numpy()))
        files.insert(1, "symbols.pt")
    _signature(out, surrogate)
    return {"format": "torchscript", "files": files, "max_rel_error": max(errors), "tolerance": 1e-5}


def to_onnx(run: RunFolder, out: Path, method: str | None) -> dict:
    try:
        import onnxruntime
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ValueError("the onnx export needs onnx and onnxruntime: pip install 'surrogate[export]'") from err
    surrogate = _load(run, method)
    model = surrogate.model_.eval()
    t_obs, u_obs, t_query, skeleton = _example(surrogate)
    names = ["t_obs", "u_obs", "t_query", "skeleton"] if model.cfg.symbols else ["t_obs", "u_obs", "t_query"]
    args = (t_obs, u_obs, t_query, skeleton)[: len(names)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Operator(model), args, str(out / "operator.onnx"), input_names=names, output_names=["u"],
                          dynamic_axes={n: {0: "batch"} for n in [*names, "u"]}, dynamo=False)
    session = onnxruntime.InferenceSession(str(out / "operator.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["u"], {n: a.numpy() for n, a in zip(names, args)})[0]
    with torch.no_grad():
        want = _Operator(model)(*args).numpy()
    _signature(out, surrogate)
    return {"format": "onnx", "files": ["operator.onnx", "signature.json", "vocabulary.json"],
            "max_rel_error": relative_error(got, want), "tolerance": 1e-5,
            "not_exported": "the symbol decoder's greedy loop (use the torchscript export's symbols.pt)"}


FORMATS = {"torchscript": to_torchscript, "onnx": to_onnx}

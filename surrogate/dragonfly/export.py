"""Export of a trained neural runtime forecaster (SMART and its neural baselines) as TorchScript.

`forecaster_<preset>.pt` maps (x (1, L, R, F) node features as `features.node_features` makes them,
runtimes (1, L) µs of those iterations) -> runtime quantiles (1, 5) µs at `QUANTILES`, with the
conformal widening applied. The router graph of the preset is built into the file, so there is one
file per topology (the 72-, 342- and 1,056-node presets). One forecast at a time: the traced graph
batches the router graph for exactly one window.

ONNX is not offered: torch_geometric's message passing (scatter with data-dependent sizes) is not
something the ONNX exporter carries.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from surrogate.core.export import relative_error
from surrogate.core.methods import method_name
from surrogate.core.store import RunFolder, write_json
from surrogate.dragonfly.methods import Neural, load_method
from surrogate.dragonfly.smart import QUANTILES
from surrogate.dragonfly.topology import PRESETS, Dragonfly


class _Forecast(torch.nn.Module):
    def __init__(self, method: Neural, topo: Dragonfly):
        super().__init__()
        self.net = method.net
        edge_index, edge_cls = method.edges(topo)
        self.register_buffer("edge_index", edge_index)
        self.register_buffer("edge_cls", edge_cls)

    def forward(self, x: torch.Tensor, runtimes: torch.Tensor) -> torch.Tensor:
        return self.net.runtime_quantiles(self.net(x, runtimes, self.edge_index, self.edge_cls), runtimes)


def to_torchscript(run: RunFolder, out: Path, method: str | None) -> dict:
    model_dir = run.path / "model"
    name = method_name(model_dir, method)
    m = load_method(model_dir, name)
    if not isinstance(m, Neural):
        raise ValueError(f"{name!r} is not a neural forecaster; TorchScript covers smart, gnn_only, "
                         "transformer_only, lstm and lstm_feat")
    rng = np.random.default_rng(0)
    files, errors = [], []
    for preset in PRESETS:
        topo = Dragonfly.preset(preset)
        module = _Forecast(m, topo).eval()
        F = int(m.net.x_mean.shape[-1])
        x = torch.as_tensor(np.abs(rng.normal(size=(1, m.steps, topo.n_routers, F))), dtype=torch.float32)
        x[..., -1] = 0.0
        x[:, :, :4, -1] = 0.25  # the target job's share of each router (the last feature)
        rt = torch.as_tensor(rng.uniform(800, 1200, size=(1, m.steps)), dtype=torch.float32)
        path = out / f"forecaster_{preset}.pt"
        with warnings.catch_warnings():  # torch.jit is deprecated in torch, but it is what C++ simulators load
            warnings.simplefilter("ignore")
            torch.jit.trace(module, (x, rt), check_trace=False).save(str(path))
            loaded = torch.jit.load(str(path))
        with torch.no_grad():
            errors.append(relative_error(loaded(x, rt).numpy(), module(x, rt).numpy()))
        files.append(path.name)
    write_json(out / "signature.json", {
        "inputs": {"x": "(1, steps, routers, features) node features (features.node_features)",
                   "runtimes": "(1, steps) runtimes of those iterations, µs"},
        "output": "(1, 5) next-iteration runtime quantiles, µs", "quantiles": list(QUANTILES),
        "steps": m.steps, "presets": {p: Dragonfly.preset(p).n_routers for p in PRESETS}, "method": name})
    return {"format": "torchscript", "files": [*files, "signature.json"], "max_rel_error": max(errors),
            "tolerance": 1e-5}


FORMATS = {"torchscript": to_torchscript}

"""A MeshGraphNets-style baseline (Pfaff et al. 2021): encode, process by message passing, decode.

Plain torch (index_add_ for the sums over edges) on the raw meshes: nodes carry their position,
boundary flags and the scalar inputs; edges carry the relative position of their ends. Fields are
decoded per node, scalar outputs from the mean of the node states. Trained for a wall-time budget.
"""
from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from surrogate.core.store import load_weights, read_json, save_weights, tensor_state, write_json
from surrogate.mmgp.data import FIELDS, Sample
from surrogate.mmgp.morphing import boundary_loops, mesh_edges


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, n_out))


class MeshGNN(nn.Module):
    def __init__(self, node_in: int, hidden: int, layers: int, n_fields: int, n_scalars: int):
        super().__init__()
        self.node_enc = _mlp(node_in, hidden, hidden)
        self.edge_enc = _mlp(3, hidden, hidden)
        self.edge_mlps = nn.ModuleList([_mlp(3 * hidden, hidden, hidden) for _ in range(layers)])
        self.node_mlps = nn.ModuleList([_mlp(2 * hidden, hidden, hidden) for _ in range(layers)])
        self.field_dec = _mlp(hidden, hidden, n_fields)
        self.scalar_dec = _mlp(hidden, hidden, n_scalars)

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor, edge_attr: torch.Tensor):
        h, e = self.node_enc(nodes), self.edge_enc(edge_attr)
        src, dst = edges
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps):
            e = e + edge_mlp(torch.cat([h[src], h[dst], e], -1))
            agg = torch.zeros_like(h).index_add_(0, dst, e)
            h = h + node_mlp(torch.cat([h, agg], -1))
        return self.field_dec(h), self.scalar_dec(h.mean(0))


def graph(sample_nodes: np.ndarray, triangles: np.ndarray, inputs: np.ndarray):
    """Node features [x, y, on boundary, on bottom, on top, scalar inputs], both edge directions."""
    e = mesh_edges(triangles)
    e = np.concatenate([e, e[:, ::-1]]).T
    n = len(sample_nodes)
    on_boundary = np.zeros(n)
    on_boundary[np.concatenate(boundary_loops(triangles))] = 1
    y = sample_nodes[:, 1]
    bottom = on_boundary * (y < y.min() + 1e-9)
    top = on_boundary * (y > y.max() - 1e-9)
    feats = np.column_stack([sample_nodes, on_boundary, bottom, top, np.tile(inputs, (n, 1))])
    rel = sample_nodes[e[1]] - sample_nodes[e[0]]
    attr = np.column_stack([rel, np.linalg.norm(rel, axis=1)])
    return feats, e, attr


class GNNSurrogate:
    """Normalisers inside; `fit(samples, seconds)` then `predict_arrays(nodes, triangles, inputs)`."""

    def __init__(self, hidden: int = 64, layers: int = 8, lr: float = 1e-3, **_):
        self.hidden, self.layers, self.lr = hidden, layers, lr

    def _tensors(self, nodes, triangles, inputs):
        f, e, a = graph(nodes, triangles, inputs)
        return (torch.as_tensor((f - self.f_mean) / self.f_std, dtype=torch.float32), torch.as_tensor(e),
                torch.as_tensor(a / self.a_scale, dtype=torch.float32))

    def fit(self, samples: list[Sample], seconds: float, seed: int = 0, max_epochs: int = 10_000) -> "GNNSurrogate":
        torch.manual_seed(seed)
        feats = [graph(s.nodes, s.triangles, s.inputs)[0] for s in samples]
        allf = np.concatenate(feats)
        self.f_mean, self.f_std = allf.mean(0), np.where(allf.std(0) > 0, allf.std(0), 1.0)
        self.a_scale = float(np.median([np.abs(s.nodes[s.triangles[:, 1]] - s.nodes[s.triangles[:, 0]]).mean()
                                        for s in samples]))
        fields = np.concatenate([np.column_stack([s.fields[k] for k in FIELDS]) for s in samples])
        self.y_mean, self.y_std = fields.mean(0), fields.std(0)
        outs = np.array([s.outputs for s in samples])
        self.s_mean, self.s_std = outs.mean(0), outs.std(0)
        self.model = MeshGNN(allf.shape[1], self.hidden, self.layers, len(FIELDS), outs.shape[1])
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        data = [(self._tensors(s.nodes, s.triangles, s.inputs),
                 torch.as_tensor((np.column_stack([s.fields[k] for k in FIELDS]) - self.y_mean) / self.y_std,
                                 dtype=torch.float32),
                 torch.as_tensor((s.outputs - self.s_mean) / self.s_std, dtype=torch.float32)) for s in samples]
        start, self.steps, self.epochs = time.perf_counter(), 0, 0
        rng = np.random.default_rng(seed)
        while time.perf_counter() - start < seconds and self.epochs < max_epochs:
            for i in rng.permutation(len(data)):
                (f, e, a), yf, ys = data[i]
                pf, ps = self.model(f, e, a)
                loss = ((pf - yf) ** 2).mean() + ((ps - ys) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.steps += 1
                if time.perf_counter() - start >= seconds:
                    break
            self.epochs += 1
        self.train_seconds = time.perf_counter() - start
        return self

    @torch.no_grad()
    def predict_arrays(self, nodes, triangles, inputs, shape_parameters=None):
        self.model.eval()
        pf, ps = self.model(*self._tensors(nodes, triangles, np.asarray(inputs, float)))
        pf = pf.numpy() * self.y_std + self.y_mean
        ps = ps.numpy() * self.s_std + self.s_mean
        from surrogate.mmgp.fem import SCALAR_OUTPUTS

        return {"fields": {k: (pf[:, j], None) for j, k in enumerate(FIELDS)},
                "scalars": {k: (float(ps[j]), None) for j, k in enumerate(SCALAR_OUTPUTS)}}

    def save(self, folder, name: str) -> None:
        norms = {k: torch.as_tensor(np.asarray(getattr(self, k), float))
                 for k in ("f_mean", "f_std", "y_mean", "y_std", "s_mean", "s_std", "a_scale")}
        save_weights(folder / f"{name}.pt", {"model": tensor_state(self.model), **norms})
        write_json(folder / f"{name}.json", {"kind": "gnn", "hidden": self.hidden, "layers": self.layers, "lr": self.lr,
                                             "node_in": int(len(self.f_mean)), "steps": self.steps,
                                             "epochs": self.epochs, "train_seconds": self.train_seconds})

    @classmethod
    def load(cls, folder, name: str) -> "GNNSurrogate":
        meta = read_json(folder / f"{name}.json")
        state = load_weights(folder / f"{name}.pt")
        g = cls(meta["hidden"], meta["layers"], meta["lr"])
        for k in ("f_mean", "f_std", "y_mean", "y_std", "s_mean", "s_std"):
            setattr(g, k, state[k].numpy())
        g.a_scale = float(state["a_scale"])
        g.model = MeshGNN(meta["node_in"], meta["hidden"], meta["layers"], len(FIELDS), len(g.s_mean))
        g.model.load_state_dict(state["model"])
        g.steps, g.epochs, g.train_seconds = meta["steps"], meta["epochs"], meta["train_seconds"]
        return g

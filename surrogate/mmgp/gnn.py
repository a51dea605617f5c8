"""A MeshGraphNets-style baseline (Pfaff et al. 2021): encode, process by message passing, decode.

Plain torch (index_add_ for the sums over edges) on the raw meshes: nodes carry their position,
boundary flags and the scalar inputs; edges carry the relative position of their ends. Fields are
decoded per node, scalar outputs from the mean of the node states. Trained for a wall-time budget
(checkpointed every epoch, resumed with the time already spent), `batch_size` meshes per step.

Under torchrun each rank takes its share of the meshes of every step (DistributedDataParallel); rank
0's budget holds for all, and all ranks stop at the same step.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from surrogate.core import distributed
from surrogate.core.store import load_weights, read_json, save_weights, tensor_state, write_json
from surrogate.core.training import batches
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

    def forward(self, nodes: torch.Tensor, edges: torch.Tensor, edge_attr: torch.Tensor,
                graph_of_node: torch.Tensor | None = None, n_graphs: int = 1):
        """Fields (nodes, fields) and scalars: (scalars,) for one mesh, (n_graphs, scalars) for several
        meshes joined into one graph (`union`), `graph_of_node` telling which mesh a node belongs to."""
        h, e = self.node_enc(nodes), self.edge_enc(edge_attr)
        src, dst = edges
        for edge_mlp, node_mlp in zip(self.edge_mlps, self.node_mlps):
            e = e + edge_mlp(torch.cat([h[src], h[dst], e], -1))
            agg = torch.zeros_like(h).index_add_(0, dst, e)
            h = h + node_mlp(torch.cat([h, agg], -1))
        if graph_of_node is None:
            return self.field_dec(h), self.scalar_dec(h.mean(0))
        return self.field_dec(h), self.scalar_dec(graph_mean(h, graph_of_node, n_graphs))


def graph_mean(values: torch.Tensor, graph_of_node: torch.Tensor, n_graphs: int) -> torch.Tensor:
    """Mean of node values (nodes, C) per mesh -> (n_graphs, C)."""
    sums = values.new_zeros(n_graphs, values.shape[1]).index_add_(0, graph_of_node, values)
    counts = torch.bincount(graph_of_node, minlength=n_graphs).clamp_min(1)
    return sums / counts[:, None].to(values.dtype)


def union(graphs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Several meshes (node features, edges, edge features) as one graph without edges between them;
    returns those three and the mesh of every node."""
    sizes = torch.tensor([len(f) for f, _, _ in graphs])
    offsets = torch.cumsum(sizes, 0) - sizes
    nodes = torch.cat([f for f, _, _ in graphs])
    edges = torch.cat([e + o for (_, e, _), o in zip(graphs, offsets)], dim=1)
    attr = torch.cat([a for _, _, a in graphs])
    return nodes, edges, attr, torch.repeat_interleave(torch.arange(len(graphs)), sizes)


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


def batch_loss(net: nn.Module, items: list) -> torch.Tensor:
    """Mean over the meshes of (mean squared field error + mean squared scalar error), normalised units."""
    nodes, edges, attr, graph_of_node = union([graph_tensors for graph_tensors, _, _ in items])
    pf, ps = net(nodes, edges, attr, graph_of_node, len(items))
    yf = torch.cat([y for _, y, _ in items])
    ys = torch.stack([y for _, _, y in items])
    field = graph_mean(((pf - yf) ** 2).mean(1, keepdim=True), graph_of_node, len(items))[:, 0]
    return (field + ((ps - ys) ** 2).mean(1)).mean()


class GNNSurrogate:
    """Normalisers inside; `fit(samples, seconds)` then `predict_arrays(nodes, triangles, inputs)`."""

    def __init__(self, hidden: int = 64, layers: int = 8, lr: float = 1e-3, batch_size: int = 1, **_):
        self.hidden, self.layers, self.lr, self.batch_size = hidden, layers, lr, batch_size

    def _tensors(self, nodes, triangles, inputs):
        f, e, a = graph(nodes, triangles, inputs)
        return (torch.as_tensor((f - self.f_mean) / self.f_std, dtype=torch.float32), torch.as_tensor(e),
                torch.as_tensor(a / self.a_scale, dtype=torch.float32))

    def fit(self, samples: list[Sample], seconds: float, seed: int = 0, max_epochs: int = 10_000,
            checkpoint: Path | None = None) -> "GNNSurrogate":
        """Train for `seconds` of wall time or `max_epochs`, whichever ends first; resumes from `checkpoint`."""
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
        distributed.check_divides(self.batch_size, "gnn: batch_size")
        spent = self._resume(checkpoint, opt)
        start = time.perf_counter() - spent
        net = distributed.wrap(self.model)
        seconds = distributed.broadcast(seconds)  # rank 0's budget holds for every rank

        def out_of_time() -> bool:  # the same answer on every rank, so that all stop at the same step
            return distributed.any_rank(time.perf_counter() - start >= seconds)

        while self.epochs < max_epochs and not out_of_time():
            total, n = 0.0, 0
            for idx in batches(len(data), self.batch_size, seed, self.epochs):
                part, weight = distributed.shard(idx)
                loss = batch_loss(net, [data[i] for i in part.tolist()])
                opt.zero_grad()
                (loss * weight).backward()
                opt.step()
                self.steps += 1
                total += distributed.part_of_global_mean(float(loss.detach()), weight) * len(idx)
                n += len(idx)
                if out_of_time():
                    break
            self.history_.append(distributed.sum_over_ranks(total)[0] / max(n, 1))
            self.epochs += 1
            self._save_checkpoint(checkpoint, opt, time.perf_counter() - start)
        self.train_seconds = time.perf_counter() - start
        return self

    def _resume(self, checkpoint: Path | None, opt: torch.optim.Optimizer) -> float:
        """Model and optimizer state, epochs, steps and loss history of an interrupted fit; the seconds it spent."""
        self.steps, self.epochs, self.history_ = 0, 0, []
        if checkpoint is None or not Path(checkpoint).exists():
            return 0.0
        state = load_weights(checkpoint)
        self.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        self.steps, self.epochs = int(state["steps"]), int(state["epochs"])
        self.history_ = [float(x) for x in state["history"]]
        return float(state["seconds"])

    def _save_checkpoint(self, checkpoint: Path | None, opt: torch.optim.Optimizer, seconds: float) -> None:
        if checkpoint is None:
            return
        save_weights(checkpoint, {"model": tensor_state(self.model), "optimizer": opt.state_dict(),
                                  "steps": self.steps, "epochs": self.epochs, "seconds": seconds,
                                  "history": torch.tensor(self.history_, dtype=torch.float64)})

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
                                             "batch_size": self.batch_size, "node_in": int(len(self.f_mean)),
                                             "steps": self.steps, "epochs": self.epochs,
                                             "train_seconds": self.train_seconds, "loss": self.history_})

    @classmethod
    def load(cls, folder, name: str) -> "GNNSurrogate":
        meta = read_json(folder / f"{name}.json")
        state = load_weights(folder / f"{name}.pt")
        g = cls(meta["hidden"], meta["layers"], meta["lr"], meta.get("batch_size", 1))
        g.history_ = meta.get("loss", [])
        for k in ("f_mean", "f_std", "y_mean", "y_std", "s_mean", "s_std"):
            setattr(g, k, state[k].numpy())
        g.a_scale = float(state["a_scale"])
        g.model = MeshGNN(meta["node_in"], meta["hidden"], meta["layers"], len(FIELDS), len(g.s_mean))
        g.model.load_state_dict(state["model"])
        g.steps, g.epochs, g.train_seconds = meta["steps"], meta["epochs"], meta["train_seconds"]
        return g

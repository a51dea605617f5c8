"""The trained solution field as a user holds it: u at any points, its derivatives, a gridded sample."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from surrogate.core.store import load_weights, read_json, save_weights, tensor_state, write_json
from surrogate.pinn.pdes import cf_order, grid_points, grid_shape, make_problem
from surrogate.pinn.pig import PIG, autograd_derivatives


class FieldModel:
    """``m(x)``: u at points x of shape (P, D), the columns of x being ``m.coords`` (space first, time last).

    numpy in, numpy out (float64); torch in, torch out (differentiable). ``m.derivatives(x)`` gives
    u, du/dx (P, D) and the pure second derivatives (P, D); ``m.to_xarray(grid)`` samples u on a grid.
    """

    def __init__(self, module: torch.nn.Module, kind: str, problem_spec: dict[str, Any], metadata: dict[str, Any]):
        self.module = module.eval()
        self.kind = kind
        self.problem = make_problem(**problem_spec)
        self.problem_spec = problem_spec
        self.metadata = metadata

    @property
    def coords(self) -> tuple[str, ...]:
        return self.problem.coords

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def _check(self, x) -> None:
        if x.ndim != 2 or x.shape[1] != len(self.coords):
            raise ValueError(f"expected x with shape (P, {len(self.coords)}) (columns {', '.join(self.coords)}), "
                             f"got {tuple(x.shape)}")

    def _u(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x).reshape(-1)

    def __call__(self, x):
        self._check(x)
        if isinstance(x, torch.Tensor):
            return self._u(x.to(self.dtype))
        x = np.asarray(x, dtype=np.float64)
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 8192):
                out.append(self._u(torch.as_tensor(x[i : i + 8192], dtype=self.dtype)).double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def derivatives(self, x) -> dict[str, Any]:
        """{"u": (P,), "du": (P, D), "d2u": (P, D)}: closed form for PIG, autograd otherwise."""
        self._check(x)
        as_numpy = not isinstance(x, torch.Tensor)
        xt = torch.as_tensor(np.asarray(x, dtype=np.float64) if as_numpy else x).to(self.dtype)
        if isinstance(self.module, PIG):
            u, du, d2u = self.module.derivatives(xt, 2)
        else:
            u, du, d2u = autograd_derivatives(self.module, xt, 2)
        out = {"u": u, "du": du, "d2u": d2u}
        return {k: v.detach().double().numpy() for k, v in out.items()} if as_numpy else out

    def to_xarray(self, grid: dict[str, Any]) -> xr.DataArray:
        """u on the tensor grid of 1D coordinate arrays (or point counts per coordinate), dims in CF order."""
        unknown = sorted(set(grid) - set(self.coords))
        if unknown or len(grid) != len(self.coords):
            raise ValueError(f"grid needs exactly the coordinates {', '.join(self.coords)}, got {', '.join(grid)}")
        axes = {c: np.asarray(v, float) if np.ndim(v) else self.problem.test_grid({c: int(v)})[c]
                for c, v in grid.items()}
        u = self(grid_points(axes, self.coords)).reshape(grid_shape(axes, self.coords))
        dims = cf_order(self.coords)
        coords = {c: (c, axes[c], coord_attrs(c, self.problem)) for c in dims}
        return xr.DataArray(u, coords=coords, dims=dims, name="u",
                            attrs={"long_name": f"{self.problem.name} solution u ({self.kind})", "units": "1"})

    # persistence -----------------------------------------------------------
    def save(self, folder: Path, name: str, extra: dict[str, Any] | None = None) -> None:
        config = self.module.config if isinstance(self.module, PIG) else self.metadata.get("net", {})
        save_weights(folder / f"{name}.pt", tensor_state(self.module))
        write_json(folder / f"{name}.json", {"kind": self.kind, "config": config, "problem": self.problem_spec,
                                             "metadata": self.metadata, **(extra or {})})

    @classmethod
    def load(cls, folder: Path, name: str) -> "FieldModel":
        info = read_json(folder / f"{name}.json")
        if info["kind"] == "pig":
            module = PIG(**info["config"])
        elif info["kind"] == "deepxde_pinn":
            from surrogate.pinn.baselines import build_net

            module = build_net(**info["config"])
        else:
            raise ValueError(f"{folder / name}.json: unknown model kind {info['kind']!r}")
        state = load_weights(folder / f"{name}.pt")
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"weights in {folder / name}.pt do not fit: missing {missing}, unexpected {unexpected}")
        return cls(module, info["kind"], info["problem"], info["metadata"])


AXES = {"x": "X", "y": "Y", "t": "T"}


def coord_attrs(c: str, problem) -> dict[str, str]:
    long = {"x": "first space coordinate", "y": "second space coordinate", "t": "time"}[c]
    return {"long_name": f"{long} (dimensionless)", "units": "1", "axis": AXES[c]}

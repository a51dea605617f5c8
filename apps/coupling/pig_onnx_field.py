"""A trained PINN/PIG field evaluated from its ONNX export with onnxruntime alone (no torch).

    surrogate export pig_helmholtz --format onnx
    python apps/coupling/pig_onnx_field.py results/pig_helmholtz/latest --points 201

Any ONNX runtime (C, C++, C#, Java, JavaScript) takes the same file: input `x` (points, D) in the
column order of `signature.json`, output `u` (points,).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def field_on_grid(run: Path, points: int) -> tuple[dict, np.ndarray]:
    import onnxruntime

    folder = run / "exports" / "onnx"
    if not (folder / "field.onnx").exists():
        raise SystemExit(f"{folder}: no onnx export; run `surrogate export {run} --format onnx` first")
    signature = json.loads((folder / "signature.json").read_text())
    columns, bounds = signature["input"]["columns"], signature["input"]["bounds"]
    axes = [np.linspace(*bounds[c], points) for c in columns]
    x = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, len(columns))
    session = onnxruntime.InferenceSession(str(folder / "field.onnx"), providers=["CPUExecutionProvider"])
    u = session.run(["u"], {"x": x.astype(signature["input"]["dtype"])})[0]
    return signature, u.reshape([points] * len(columns))


def main(argv: list[str] | None = None) -> np.ndarray:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", default="results/pig_helmholtz/latest")
    parser.add_argument("--points", type=int, default=101, help="grid points per coordinate")
    args = parser.parse_args(argv)
    signature, u = field_on_grid(Path(args.run), args.points)
    print(f"{signature['problem']['name']}: u on a {' x '.join(map(str, u.shape))} grid of "
          f"{', '.join(signature['input']['columns'])}; min {u.min():.4g}, max {u.max():.4g}")
    return u


if __name__ == "__main__":
    main()

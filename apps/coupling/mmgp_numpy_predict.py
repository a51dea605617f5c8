"""A trained MMGP predicting on a user's mesh from its numpy export: numpy, scipy and meshio only.

    surrogate export mmgp --format numpy
    python apps/coupling/mmgp_numpy_predict.py results/mmgp/latest my_specimen.vtu --scalars 30 0.5 100

Prints the predicted scalar outputs with their standard deviations and writes the predicted fields
and their standard deviations beside the mesh (`<mesh>_prediction.vtu`).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path


def load_exported(run: Path):
    folder = run / "exports" / "numpy"
    if not (folder / "numpy_mmgp.py").exists():
        raise SystemExit(f"{folder}: no numpy export; run `surrogate export {run} --format numpy` first")
    for name in ("morphing", "numpy_mmgp"):  # numpy_mmgp imports morphing from beside itself
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    weights = next(f for f in json.loads((folder / "check.json").read_text())["files"] if f.endswith(".npz"))
    return module.NumpyMMGP.load(folder / weights)


def main(argv: list[str] | None = None) -> dict:
    import meshio

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("mesh", help="a triangle mesh meshio reads")
    parser.add_argument("--scalars", nargs=3, type=float, default=[30.0, 0.5, 100.0], metavar=("LOAD", "SHEAR", "E"))
    args = parser.parse_args(argv)
    model = load_exported(Path(args.run))
    mesh = meshio.read(args.mesh)
    triangles = mesh.get_cells_type("triangle")
    out = model.predict(mesh.points[:, :2], triangles, args.scalars)
    for name, (mean, std) in out["scalars"].items():
        print(f"{name:>18} = {mean:.5g} +- {std:.2g}")
    data = {k: v for name, (mean, std) in out["fields"].items() for k, v in ((name, mean), (f"{name}_std", std))}
    target = Path(args.mesh).with_name(Path(args.mesh).stem + "_prediction.vtu")
    meshio.write(target, meshio.Mesh(mesh.points, [("triangle", triangles)], point_data=data))
    print(f"wrote {target}")
    return out


if __name__ == "__main__":
    main()

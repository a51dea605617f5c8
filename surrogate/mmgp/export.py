"""Export of a trained MMGP as a self-contained numpy predictor (numpy + scipy, no torch or gpytorch)."""
from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np

from surrogate.core.export import relative_error
from surrogate.core.methods import method_name
from surrogate.core.store import RunFolder
from surrogate.mmgp import morphing, numpy_mmgp
from surrogate.mmgp.data import read_split
from surrogate.mmgp.model import MMGP


def to_numpy(run: RunFolder, out: Path, method: str | None) -> dict:
    model_dir = run.path / "model"
    name = method_name(model_dir, method)
    model = MMGP.load(model_dir, name)
    if model.settings.get("shape_input") == "true_parameters":
        raise ValueError(f"{name!r} reads the generator's shape parameters, which a new mesh does not have; "
                         "export the run's surrogate or another MMGP baseline")
    exported = numpy_mmgp.NumpyMMGP(model.to_arrays())  # the numpy GP posterior, not gpytorch's
    exported.save(out / f"{name}.npz")
    for module in (numpy_mmgp, morphing):
        shutil.copy(module.__file__, out / Path(module.__file__).name)
    loaded = numpy_mmgp.NumpyMMGP.load(out / f"{name}.npz")
    errors = []
    for sample in read_split(run.path / "data", "test", 3):
        with warnings.catch_warnings():  # a test shape far from few training shapes is still a valid check
            warnings.simplefilter("ignore")
            got = loaded.predict(sample.nodes, sample.triangles, sample.inputs)
            want = model.predict_arrays(sample.nodes, sample.triangles, sample.inputs)
        for kind in ("fields", "scalars"):
            for key, (mean, std) in want[kind].items():
                errors += [relative_error(got[kind][key][0], mean), relative_error(got[kind][key][1], std)]
    return {"format": "numpy", "files": [f"{name}.npz", "numpy_mmgp.py", "morphing.py"],
            "max_rel_error": float(np.max(errors)), "tolerance": 1e-6, "checked_on": "3 test samples"}


FORMATS = {"numpy": to_numpy}

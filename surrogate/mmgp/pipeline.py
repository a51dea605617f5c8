"""The mmgp pipeline: specimens -> FEM -> morphing, POD and GPs -> fields and scalars with uncertainty."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from surrogate.core.runner import Pipeline
from surrogate.mmgp import data as D
from surrogate.mmgp.geometry import SpecimenFamily
from surrogate.mmgp.schema import MMGPCase


def specimen_family(case: MMGPCase) -> SpecimenFamily:
    family = SpecimenFamily.from_file(case.geometry.definition)
    return family.with_mesh_size(case.geometry.mesh_size)


class MMGPPipeline(Pipeline):
    Case = MMGPCase
    family = "mmgp"

    @classmethod
    def data_config(cls, case: MMGPCase) -> dict[str, Any]:
        d = case.data
        return {"format": 1, "seed": case.seed, "geometry": dict(specimen_family(case).__dict__),
                "physics": case.physics.model_dump(mode="json"),
                "counts": {"train": d.n_train, "test": d.n_test, "ood": d.n_ood}}

    def generate_data(self, out: Path) -> None:
        cfg = self.data_config(self.case)
        D.generate(out, self.case.seed, specimen_family(self.case), cfg["physics"], cfg["counts"],
                   self.case.data.workers, self.log)

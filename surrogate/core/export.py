"""`surrogate export RUN --format F`: a trained surrogate written for use outside this package.

Each family lists its formats in a module (`EXPORTERS`) with a ``FORMATS`` table: format name ->
function ``(run, out, method) -> check``. The function writes its files into `out` (an empty
folder) and loads them back: ``check`` holds the largest relative difference between the export
and the trained model on test inputs (``max_rel_error``), the ``tolerance`` it must meet, and
anything else worth reporting. The export lands in ``run/exports/<format>`` (a baseline's in
``run/exports/<method>.<format>``) only when the check passes; a failed or interrupted export leaves nothing behind.
"""
from __future__ import annotations

import importlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from surrogate.core.case import CaseError
from surrogate.core.store import RunFolder, write_json

EXPORTERS = {
    "lorenz96": "surrogate.lorenz96.export",
    "pinn": "surrogate.pinn.export",
    "mmgp": "surrogate.mmgp.export",
    "prose": "surrogate.prose.export",
    "dragonfly": "surrogate.dragonfly.export",
}


class ExportMismatch(RuntimeError):
    """The written export does not reproduce the trained model within its tolerance."""


def formats(family: str) -> list[str]:
    if family not in EXPORTERS:
        return []
    return sorted(importlib.import_module(EXPORTERS[family]).FORMATS)


def relative_error(exported, reference) -> float:
    """max |exported - reference| / max |reference|: one number for a whole output array."""
    a, b = np.asarray(exported, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"the export returned shape {a.shape}, the model {b.shape}")
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


def export_run(run: RunFolder, fmt: str, method: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Write, load back and check one export; returns its folder and the check."""
    meta = run.meta()
    family = meta.get("family")
    if run.status != "finished":
        raise CaseError(f"{run.path}: the run is {run.status!r}; only a finished run can be exported "
                        "(run it to the end first, see `surrogate list`)")
    allowed = formats(family)
    if fmt not in allowed:
        raise CaseError(f"format {fmt!r} is not available for {family} runs; "
                        f"allowed: {', '.join(allowed) if allowed else 'none (this family has no exports)'}")
    exporter = importlib.import_module(EXPORTERS[family]).FORMATS[fmt]
    final = run.path / "exports" / (fmt if method is None else f"{method}.{fmt}")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{fmt}-", dir=final.parent))
    try:
        try:
            check = exporter(run, work, method)
        except (ValueError, KeyError) as err:  # a method the format cannot carry, an unknown method name
            raise CaseError(str(err.args[0] if isinstance(err, KeyError) else err)) from None
        if not check["max_rel_error"] <= check["tolerance"]:
            raise ExportMismatch(f"the {fmt} export differs from the model by {check['max_rel_error']:.3g} "
                               f"(relative), more than the allowed {check['tolerance']:g}; nothing was written")
        write_json(work / "check.json", check)
        if final.exists():  # replace an older export: move it aside first so `final` is never half-written
            old = final.with_name(f".{fmt}-old-{os.getpid()}")
            final.rename(old)
            shutil.rmtree(old)
        work.rename(final)
    finally:
        if work.exists():
            shutil.rmtree(work)
    return final, check

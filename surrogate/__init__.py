"""surrogate: scientific-ML surrogates of physical simulations, judged against their solvers."""
from __future__ import annotations

from pathlib import Path

__version__ = "0.1.0"

from surrogate.core.case import Case, CaseError, load_case  # noqa: E402

__all__ = ["load", "run", "Case", "CaseError", "load_case", "__version__"]


def run(case: str | Path | Case, profile: str | None = None, overrides: list[str] | tuple[str, ...] = (),
        results: str | Path = "results", fresh: bool = False, quiet: bool = False) -> Path:
    """Run (or resume) a case file end to end; returns the run folder."""
    from surrogate.core.runner import run_case

    if not isinstance(case, Case):
        case = load_case(case, profile, overrides)
    return run_case(case, results, fresh=fresh, quiet=quiet).path


def load(run_dir: str | Path, method: str | None = None, device: str = "cpu"):
    """The trained surrogate of a run folder (or `results/<case>/latest`), normalisers inside.

    `method` picks a baseline of the same run instead of the surrogate.
    """
    from surrogate.core import registry
    from surrogate.core.store import RunFolder

    run_path = Path(run_dir)
    if not (run_path / "meta.json").exists():
        raise FileNotFoundError(f"{run_dir}: not a run folder (no meta.json); see `surrogate list`")
    folder = RunFolder(run_path.resolve())
    family = folder.meta().get("family")
    if not (run_path / "model" / "index.json").exists():
        raise FileNotFoundError(f"{run_dir}: this run has no trained model yet (status: {folder.status})")
    return registry.pipeline_class(family).load(folder, device=device, method=method)

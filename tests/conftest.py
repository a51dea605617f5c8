"""Shared fixtures: smoke runs of a case per family, made once per test session and shared by the tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "cases"

# one thread per process: the suite starts subprocesses, and oversubscribed OpenMP threads spin
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One thread per test: on a shared 2-core machine, oversubscribed OpenMP threads spin and crawl."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="session")
def lorenz96_smoke_run(smoke_results) -> Path:
    import surrogate

    return surrogate.run(CASES / "lorenz96_mno.yaml", profile="smoke", results=smoke_results, quiet=True)


@pytest.fixture(scope="session")
def helmholtz_smoke_run(smoke_results) -> Path:
    import torch

    import surrogate

    torch.set_num_threads(1)
    return surrogate.run(CASES / "pig_helmholtz.yaml", profile="smoke", results=smoke_results, quiet=True)


@pytest.fixture(scope="session")
def mmgp_smoke_run(smoke_results) -> Path:
    import torch

    import surrogate

    torch.set_num_threads(1)
    return surrogate.run(CASES / "mmgp.yaml", profile="smoke", results=smoke_results, quiet=True)


@pytest.fixture(scope="session")
def mmgp_hole_smoke_run(smoke_results) -> Path:
    import torch

    import surrogate

    torch.set_num_threads(1)
    return surrogate.run(CASES / "mmgp_hole.yaml", profile="smoke", results=smoke_results, quiet=True)


@pytest.fixture(scope="session")
def dragonfly_smoke_run(smoke_results) -> Path:
    import surrogate

    return surrogate.run(CASES / "dragonfly_smart.yaml", profile="smoke", results=smoke_results, quiet=True)


@pytest.fixture(scope="session")
def prose_smoke_run(smoke_results) -> Path:
    import surrogate

    return surrogate.run(CASES / "prose.yaml", profile="smoke", results=smoke_results, quiet=True)

"""Every pig case file runs under its smoke profile; the run folder, the load API and bad input."""
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import surrogate
from surrogate.cli import main
from surrogate.core.store import read_json

CASES = sorted(Path(__file__).resolve().parent.parent.glob("cases/pig_*.yaml"))



@pytest.fixture
def helmholtz_run(helmholtz_smoke_run):
    return Path(helmholtz_smoke_run)


def test_every_pinn_pde_has_a_default_and_a_paper_case():
    names = {c.stem for c in CASES}
    for pde in ("helmholtz", "klein_gordon", "flow_mixing", "burgers", "allen_cahn"):
        assert {f"pig_{pde}", f"pig_{pde}_paper"} <= names


@pytest.mark.parametrize("case", [c for c in CASES if c.stem != "pig_helmholtz"], ids=lambda c: c.stem)
def test_case_runs_under_its_smoke_profile(case, tmp_path):
    run = Path(surrogate.run(case, profile="smoke", results=tmp_path, quiet=True))
    _check_run(run)


def _check_run(run: Path):
    metrics = read_json(run / "metrics.json")
    assert metrics["headline"]["method"] == "pig" and np.isfinite(metrics["headline"]["value"])
    methods = metrics["methods"]
    for m in methods:
        assert any(r["method"] == m and r["metric"] == "rel_l2" for r in metrics["rows"])
    with xr.open_dataset(run / "predictions.nc") as ds:
        for name, var in ds.variables.items():
            assert "units" in var.attrs and "long_name" in var.attrs, name
        assert list(ds["method"].values) == methods
        assert ds["gaussian_centre"].dims == ("channel", "gaussian", "coordinate")
        err = ds["u_prediction"] - ds["u_reference"]
        assert np.allclose(err.values, ds["u_error"].values)
    assert {"error_vs_time.png", "field_error_centres.png"} <= {p.name for p in (run / "figures").iterdir()}


def test_helmholtz_smoke_run_and_load_api(helmholtz_run):
    _check_run(helmholtz_run)
    m = surrogate.load(helmholtz_run)
    assert m.coords == ("x", "y")
    # the loaded model reproduces the evaluation's predictions exactly
    with xr.open_dataset(helmholtz_run / "predictions.nc") as ds:
        pred = ds["u_prediction"].sel({"method": "pig"})
        X, Y = np.meshgrid(ds.x.values, ds.y.values)
        again = m(np.stack([X.ravel(), Y.ravel()], 1)).reshape(X.shape)
        assert np.array_equal(again, pred.transpose("y", "x").values)
    # numpy in, numpy out; torch in, torch out, differentiable
    x = np.array([[0.1, -0.3], [0.5, 0.5]])
    assert isinstance(m(x), np.ndarray) and m(x).shape == (2,)
    xt = torch.tensor(x, requires_grad=True)
    ut = m(xt)
    assert isinstance(ut, torch.Tensor) and ut.requires_grad
    d = m.derivatives(x)
    assert d["du"].shape == (2, 2) and d["d2u"].shape == (2, 2) and np.allclose(d["u"], m(x))
    da = m.to_xarray({"x": 5, "y": np.linspace(-1, 1, 7)})
    assert da.dims == ("y", "x") and da.shape == (7, 5) and da.attrs["units"] == "1"
    with pytest.raises(ValueError, match=r"expected x with shape \(P, 2\)"):
        m(np.zeros((3, 3)))
    pinn = surrogate.load(helmholtz_run, method="pinn")
    assert pinn(x).shape == (2,)
    with pytest.raises(KeyError, match="it has: pig, pinn"):
        surrogate.load(helmholtz_run, method="nope")


@pytest.mark.parametrize("override,expected", [
    ("pde.name=poisson", "'helmholtz', 'klein_gordon', 'flow_mixing', 'burgers' or 'allen_cahn'"),
    ("surrogate.n_gaussians=0", "surrogate.n_gaussians = 0: Input should be greater than or equal to 1"),
    ("train.n_collocation=-5", "train.n_collocation = -5: Input should be greater than or equal to 1"),
    ("pde.domain.x=[1,-1]", "domain.x = [1.0, -1.0] needs min < max"),
    ("surrogate.input_range=[2,0]", "needs min < max"),
    ("pde.params.omega=2", "unknown parameter(s) ['omega']; allowed: a1, a2, k"),
    ("train.phases=[{optimizer: sgd, steps: 3}]", "'adam' or 'lbfgs'"),
    ("surrogate.sigma_init=[0.1,0.2,0.3]", "3 values for 2 coordinates (x, y)"),
    ("train.adaptive={pool: 8}", "phases.0.resample_every = 10 must divide steps_per_epoch = 15"),
    ("train.adaptive={pool: 1}", "train.adaptive.pool = 1: Input should be greater than or equal to 2"),
    ("train.relocate={every: 2}", "train.relocate: phases.0.resample_every = 10 must divide steps_per_epoch = 15"),
    ("train.relocate={share: 0.9}", "train.relocate.share = 0.9: Input should be less than or equal to 0.5"),
])
def test_bad_input_exits_with_code_2_and_names_the_key(override, expected, capsys):
    case = next(c for c in CASES if c.stem == "pig_helmholtz")
    assert main(["validate", str(case), override, "train.steps_per_epoch=15"]) == 2
    assert expected in capsys.readouterr().err

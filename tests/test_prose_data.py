"""PROSE dataset: layout, CF attributes, tokens that decode to the drawn equations, independent splits."""
import numpy as np
import pytest

from surrogate.core.store import read_netcdf
from surrogate.prose.data import make_dataset, tokens, write_dataset
from surrogate.prose.odes import FAMILIES, integrate, time_grid
from surrogate.prose.symbols import from_tokens, to_tokens


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(["lorenz", "rossler"], n_train=4, n_test=3, n_initial_train=2, n_initial_test=2, seed=7)


def test_layout_and_cf_attributes(dataset, tmp_path):
    ds = dataset
    assert ds.sizes["sample"] == 2 * (4 * 2 + 3 * 2) and ds.sizes["time"] == 192 and ds.sizes["component"] == 3
    np.testing.assert_array_equal(ds["time"].values, time_grid())
    for name, v in ds.variables.items():
        assert "units" in v.attrs and "long_name" in v.attrs, name
    write_dataset(ds, tmp_path / "prose.nc")
    back = read_netcdf(tmp_path / "prose.nc")
    np.testing.assert_array_equal(back["equation_tokens"].values, ds["equation_tokens"].values)
    np.testing.assert_array_equal(back["u"].values, ds["u"].values)


def test_tokens_decode_to_the_stored_parameters(dataset):
    ds = dataset
    names = ds.attrs["families"].split()
    for code, name in enumerate(names):
        family, rows = FAMILIES[name], np.flatnonzero(ds["family"].values == code)
        params = ds["parameters"].values[rows, :len(family.nominal)]
        for i, p in zip(rows, params):
            assert from_tokens(tokens(ds, "equation_tokens", i)) == family.equation(p)
            if int(ds["corruption"][i]) == 0:
                assert tokens(ds, "skeleton_tokens", i) == to_tokens(family.skeleton())
        # trajectories start in [-2, 2]^3 and solve their equation (float32 storage: compare the observed part)
        u = ds["u"].values[rows].astype(float)
        assert np.all(np.abs(u[:, 0]) <= 2)
        again = integrate(family, params, u[:, 0])
        np.testing.assert_allclose(again[:, :64], u[:, :64], rtol=1e-4, atol=1e-4)


def test_splits_are_independent_and_distances_reported(dataset):
    ds = dataset
    train, test = ds["split"].values == 0, ds["split"].values == 1
    assert np.all(np.isnan(ds["nearest_train_distance"].values[train]))
    d = ds["nearest_train_distance"].values[test]
    assert np.all((d > 0) & (d < 0.2))
    train_params = {tuple(p) for p in ds["parameters"].values[train]}
    assert not any(tuple(p) in train_params for p in ds["parameters"].values[test])
    noise = np.linalg.norm(ds["u_noisy"].values - ds["u"].values, axis=(1, 2))
    np.testing.assert_allclose(noise / np.linalg.norm(ds["u"].values, axis=(1, 2)), 0.02, rtol=1e-3)


def test_same_seed_same_data_and_arguments_checked(dataset):
    again = make_dataset(["lorenz", "rossler"], n_train=4, n_test=3, n_initial_train=2, n_initial_test=2, seed=7)
    np.testing.assert_array_equal(again["u_noisy"].values, dataset["u_noisy"].values)
    with pytest.raises(ValueError, match="choose from"):
        make_dataset(["lorenz63"])
    with pytest.raises(ValueError, match="n_train"):
        make_dataset(["lorenz"], n_train=0)

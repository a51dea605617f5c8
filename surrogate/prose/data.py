"""PROSE datasets: trajectories, parameters and token sequences as one CF-annotated ``xarray.Dataset``.

Every (family, split) pair draws from its own seeded streams, so test equations are drawn
independently of the training equations (never split off a common pool), and each test sample
carries its distance to the nearest training equation of its family. The stored noisy copy is one
fixed draw (the paper's evaluation convention); training code may redraw noise from the clean ``u``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from surrogate.prose.odes import (
    FAMILIES,
    N_OBSERVED,
    NOISE_LEVEL,
    PARAMETER_SPREAD,
    add_noise,
    get_family,
    nearest_distance,
    simulate,
    time_grid,
)
from surrogate.prose.symbols import VOCABULARY, assemble, corrupt, to_tokens

SPLITS = {"train": 0, "test": 1}
MAX_PARAMETERS = max(len(f.nominal) for f in FAMILIES.values())


def make_dataset(families: Sequence[str] | None = None, n_train: int = 100, n_test: int = 20,
                 n_initial_train: int = 8, n_initial_test: int = 4, noise_level: float = NOISE_LEVEL,
                 spread: float = PARAMETER_SPREAD, test_spread: float | None = None,
                 p_add: float = 0.15, p_delete: float = 0.15, seed: int = 0) -> xr.Dataset:
    """Draw equations per family and split, integrate them, tokenise them.

    n_train / n_test: equations per family; n_initial_*: trajectories per equation.
    test_spread: parameter spread of the test equations (default ``spread``; 0.2 for the
    out-of-distribution set). p_add / p_delete: probabilities of the corrupted symbol input.
    Equations for which no bounded trajectory was found are left out.
    """
    names = list(FAMILIES) if families is None else list(families)
    for name in names:
        get_family(name)  # unknown names fail here, listing the valid ones
    for arg, value in {"n_train": n_train, "n_test": n_test, "n_initial_train": n_initial_train,
                       "n_initial_test": n_initial_test}.items():
        if value < 1:
            raise ValueError(f"{arg} must be >= 1, got {value}")
    test_spread = spread if test_spread is None else test_spread
    parts = []
    for code, name in enumerate(names):
        family = FAMILIES[name]
        train_params = family.draw_parameters(n_train, np.random.default_rng([seed, 0, code, 0]), spread)
        test_params = family.draw_parameters(n_test, np.random.default_rng([seed, 1, code, 0]), test_spread)
        for split, params, n_initial in (("train", train_params, n_initial_train),
                                         ("test", test_params, n_initial_test)):
            s = SPLITS[split]
            u, _, ok = simulate(family, params, n_initial, np.random.default_rng([seed, s, code, 1]))
            params, u = params[ok], u[ok]
            distance = (nearest_distance(family, params, train_params) if split == "test"
                        else np.full(len(params), np.nan))
            noisy = add_noise(u, noise_level, np.random.default_rng([seed, s, code, 2]))
            corruption_rng = np.random.default_rng([seed, s, code, 3])
            equations = [to_tokens(family.equation(p)) for p in params]
            skeletons, modes = [], []
            for _ in range(len(params) * n_initial):
                mode, terms = corrupt(family.skeleton_terms, corruption_rng, p_add, p_delete)
                modes.append(mode)
                skeletons.append(to_tokens(assemble(terms)))
            padded = np.full((len(params), MAX_PARAMETERS), np.nan)
            padded[:, :params.shape[1]] = params
            parts.append(dict(
                u=u.reshape(-1, *u.shape[2:]), u_noisy=noisy.reshape(-1, *u.shape[2:]),
                family=np.full(u.shape[0] * n_initial, code), split=np.full(u.shape[0] * n_initial, s),
                equation=np.repeat(np.arange(len(params)), n_initial), parameters=np.repeat(padded, n_initial, 0),
                nearest_train_distance=np.repeat(distance, n_initial), corruption=np.array(modes),
                equation_tokens=[e for e in equations for _ in range(n_initial)], skeleton_tokens=skeletons,
            ))
    return _to_dataset(parts, names, noise_level, spread, test_spread, p_add, p_delete, seed)


def make_dataset_task(kwargs: dict[str, Any]):
    """A solver task: `make_dataset` with keyword arguments (a module-level function of a module without
    torch, so that Dask workers run it without importing torch)."""
    return make_dataset(**kwargs)


def _pad_ids(sequences: list[list[str]]) -> np.ndarray:
    width = max(len(s) for s in sequences)
    out = np.full((len(sequences), width), VOCABULARY.pad_id, dtype=np.int16)
    for i, s in enumerate(sequences):
        out[i, :len(s)] = VOCABULARY.encode(s)
    return out


def _to_dataset(parts, names, noise_level, spread, test_spread, p_add, p_delete, seed) -> xr.Dataset:
    cat = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if not k.endswith("tokens")}
    equation_ids = _pad_ids([s for p in parts for s in p["equation_tokens"]])
    skeleton_ids = _pad_ids([s for p in parts for s in p["skeleton_tokens"]])
    state = ("sample", "time", "component")
    one = "1"  # the systems are nondimensional
    ds = xr.Dataset(
        {
            "u": (state, cat["u"].astype(np.float32), {"units": one, "long_name": "state (clean trajectory)"}),
            "u_noisy": (state, cat["u_noisy"].astype(np.float32), {
                "units": one, "long_name": "state with additive noise",
                "comment": f"noise L2 norm = {noise_level} x trajectory L2 norm, per trajectory"}),
            "family": ("sample", cat["family"].astype(np.int16), {
                "units": one, "long_name": "ODE family", "flag_values": np.arange(len(names), dtype=np.int16),
                "flag_meanings": " ".join(names)}),
            "split": ("sample", cat["split"].astype(np.int8), {
                "units": one, "long_name": "data split", "flag_values": np.array([0, 1], dtype=np.int8),
                "flag_meanings": "train test"}),
            "equation": ("sample", cat["equation"].astype(np.int32), {
                "units": one, "long_name": "equation index within family and split"}),
            "parameters": (("sample", "parameter"), cat["parameters"], {
                "units": one, "long_name": "equation parameters in the family's order (NaN padded)",
                "comment": "; ".join(f"{n}: {' '.join(FAMILIES[n].parameter_names)}" for n in names)}),
            "nearest_train_distance": ("sample", cat["nearest_train_distance"], {
                "units": one, "long_name": "distance to the nearest training equation of the family",
                "comment": "RMS parameter difference in units of |nominal|; NaN for training samples"}),
            "corruption": ("sample", cat["corruption"].astype(np.int8), {
                "units": one, "long_name": "symbol input mode", "flag_values": np.array([-1, 0, 1], dtype=np.int8),
                "flag_meanings": "term_deleted clean term_added"}),
            "equation_tokens": (("sample", "equation_token"), equation_ids, {
                "units": one, "long_name": "full equation, prefix token ids (target of the symbol decoder)"}),
            "skeleton_tokens": (("sample", "skeleton_token"), skeleton_ids, {
                "units": one, "long_name": "skeleton with placeholders, prefix token ids (symbol input)"}),
        },
        coords={
            "time": ("time", time_grid(), {"units": one, "long_name": "time (nondimensional)",
                                           "comment": f"first {N_OBSERVED} times observed, the rest predicted"}),
            "component": ("component", np.array(["u_0", "u_1", "u_2"]), {"units": one,
                                                                         "long_name": "state component"}),
        },
        attrs={
            "title": "PROSE three-dimensional chaotic ODE families",
            "families": " ".join(names), "n_observed": N_OBSERVED, "noise_level": noise_level,
            "parameter_spread": spread, "test_parameter_spread": test_spread, "p_add": p_add,
            "p_delete": p_delete, "seed": seed, "vocabulary": " ".join(VOCABULARY.words),
            "pad_id": VOCABULARY.pad_id,
        },
    )
    return ds


def tokens(ds: xr.Dataset, variable: str, sample: int) -> list[str]:
    """The token strings of one sample's ``equation_tokens`` or ``skeleton_tokens``."""
    if variable not in ("equation_tokens", "skeleton_tokens"):
        raise ValueError(f"variable must be 'equation_tokens' or 'skeleton_tokens', got {variable!r}")
    words = ds.attrs["vocabulary"].split(" ")
    return [words[i] for i in ds[variable].values[sample] if i != ds.attrs["pad_id"]]


def write_dataset(ds: xr.Dataset, path: str | Path) -> None:
    """Write as NetCDF (atomic, CF checked) through the core store."""
    from surrogate.core.store import write_netcdf

    write_netcdf(ds, path)

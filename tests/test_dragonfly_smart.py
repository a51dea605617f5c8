"""The Dragonfly surrogate end to end: smoke run, load + forecast, bad input, hybrid mode."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

import surrogate
from surrogate.core.case import CaseError, load_case
from surrogate.dragonfly import Dragonfly, Job, place_jobs
from surrogate.dragonfly.features import iteration_counters, job_share, node_features
from surrogate.dragonfly.hybrid import _recent_samples, run_hybrid
from surrogate.dragonfly.methods import Forecast, Neural, Samples, samples_from_runs
from surrogate.dragonfly.scenarios import Scenario, make_splits, simulate
from surrogate.dragonfly.smart import KINDS, QUANTILES, Ensemble, Forecaster, conformal_offsets, log_target

ROOT = Path(__file__).resolve().parents[1]
CASE = ROOT / "cases" / "dragonfly_smart.yaml"


@pytest.fixture(scope="session")
def smoke_run(dragonfly_smoke_run) -> Path:
    return Path(dragonfly_smoke_run)


@pytest.fixture(scope="module")
def window(smoke_run):
    with xr.open_dataset(smoke_run / "data" / "test_seeds_000.nc") as ds:
        ds = ds.load()
    counters, rt = iteration_counters(ds)
    routers = ds["job_node_router"].values[0]
    return counters[1:4], rt[1:4], routers[routers >= 0], rt[4]


def test_smoke_run_writes_a_complete_run_folder(smoke_run):
    for name in ("case.yaml", "meta.json", "metrics.json", "predictions.nc", "model/index.json", "model/smart.pt",
                 "model/smart.json", "figures/forecast.png", "data/train_000.nc", "data/test_transfer_000.nc"):
        assert (smoke_run / name).exists(), name
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["headline"]["method"] == "smart" and np.isfinite(metrics["headline"]["value"])
    got = {(r["method"], r["metric"]) for r in metrics["rows"]}
    for m in ("smart", "last", "moving_average", "arima", "gbt", "lstm"):
        assert (m, "mape_heldout") in got and (m, "coverage80_heldout") in got and (m, "latency_ms") in got
    assert ("jitter_floor", "mape_test_seeds") in got and ("hybrid", "speedup_w1") in got
    value = {(r["method"], r["metric"]): r["value"] for r in metrics["rows"]}
    # a forecaster of the expected runtime errs less than a second noisy run does
    assert 0 < value[("oracle_expected_runtime", "mape_test_seeds")] < value[("jitter_floor", "mape_test_seeds")]
    assert (smoke_run / "data" / "validation_000.nc").exists() and (smoke_run / "data" / "calibration_000.nc").exists()
    with xr.open_dataset(smoke_run / "data" / "train_000.nc") as ds:
        for name, var in ds.variables.items():
            assert "units" in var.attrs and "long_name" in var.attrs, name
        assert ds.attrs["split"] == "train" and Scenario.from_json(ds.attrs["scenario"]).preset == "df72"


def test_load_and_forecast_reproduce_the_evaluation(smoke_run, window):
    m = surrogate.load(smoke_run)
    counters, rt, routers, _ = window
    f = m.forecast(counters, rt, routers)
    assert isinstance(f, Forecast)
    assert f.low95 <= f.low80 <= f.runtime_us <= f.high80 <= f.high95 and f.runtime_us > 0
    assert m.metadata["inputs"]["runtimes_us"]["units"] == "us"
    with xr.open_dataset(smoke_run / "predictions.nc") as p:
        i = int(np.flatnonzero((p.split.values == "test_seeds") & (p.forecast_iteration.values == 4))[0])
        np.testing.assert_allclose(p.runtime_quantiles.sel({"method": "smart"}).values[i, 2], f.runtime_us, rtol=1e-5)
    last = surrogate.load(smoke_run, method="last")
    assert last.forecast(counters, rt, routers).runtime_us == pytest.approx(rt[-1] * np.exp(
        last.offsets_[2]), rel=1e-9)


def test_forecast_rejects_bad_windows(smoke_run, window):
    m = surrogate.load(smoke_run)
    counters, rt, routers, _ = window
    with pytest.raises(ValueError, match=r"expected counters_window with shape \(3, 36, 7, 3\).*got \(2, 36, 7, 3\)"):
        m.forecast(counters[:2], rt, routers)
    with pytest.raises(ValueError, match="known preset"):
        m.forecast(counters[:, :10], rt, routers)
    bad = counters.copy()
    bad[1, 5, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"non-finite value .* at index \(1, 5, 2, 0\)"):
        m.forecast(bad, rt, routers)
    with pytest.raises(ValueError, match=r"runtimes_us with shape \(3,\)"):
        m.forecast(counters, rt[:2], routers)
    with pytest.raises(ValueError, match=r"router ids in \[0, 35\]"):
        m.forecast(counters, rt, np.array([99]))


def test_bad_topology_jobs_and_cases(tmp_path):
    with pytest.raises(ValueError, match="a .routers per group. must be at least 2"):
        Dragonfly(1, 2, 2)
    with pytest.raises(ValueError, match=r"p \(terminals per router\) must be a positive integer"):
        Dragonfly(4, 0, 2)
    with pytest.raises(ValueError, match="need 80 ranks .* has 72 nodes"):
        place_jobs(Dragonfly.preset("df72"), [Job("milc", 80)])
    with pytest.raises(CaseError, match=r"unknown Dragonfly preset 'df99'; allowed: df72, df342, df1056"):
        load_case(CASE, "smoke", ["data.train={df99: 2}"])
    with pytest.raises(CaseError, match="window_us .* must be a multiple of dt_ns"):
        load_case(CASE, "smoke", ["simulator.window_us=0.7"])
    with pytest.raises(CaseError, match="iterations .* must be at least steps"):
        load_case(CASE, None, ["data.iterations=5"])
    with pytest.raises(CaseError, match="held_out_app"):
        load_case(CASE, None, ["data.held_out_app=hpl"])


def test_splits_keep_the_held_out_workload_out_of_training():
    sp = make_splits(train={"df72": 12, "df342": 3}, n_test_seeds=4, n_test_unseen=6, n_transfer=1, n_jitter=2,
                     validation_fraction=0.2, iterations=10, transfer_preset="df1056", held_out_app="io",
                     max_corunners=2, seed=0, calibration={"df72": 2, "df342": 2}, jitter_runs=2)
    fit = sp["train"] + sp["validation"] + sp["calibration"]
    seen = {s.corunners for s in fit}
    assert all("io" not in s.corunners and s.target != "io" for s in fit)
    assert [s.preset for s in sp["calibration"]] == ["df72", "df72", "df342", "df342"] and len(sp["validation"]) == 3
    # the dedicated calibration scenarios come from their own stream: every other scenario is unchanged
    old = make_splits(train={"df72": 12, "df342": 3}, n_test_seeds=4, n_test_unseen=6, n_transfer=1, n_jitter=2,
                      validation_fraction=0.2, iterations=10, transfer_preset="df1056", held_out_app="io",
                      max_corunners=2, seed=0)
    assert all(old[k] == sp[k] for k in ("train", "validation", "test_seeds", "test_unseen", "test_transfer"))
    assert not old["calibration"] and sp["jitter"][:2] == old["jitter"]
    assert len({s.placement_seed for s in fit + sp["test_seeds"]}) == len(fit) + 4
    assert all(s.corunners not in seen for s in sp["test_unseen"])
    assert any("io" in s.corunners for s in sp["test_unseen"])
    assert {s.preset for s in sp["test_transfer"]} == {"df1056"}
    for i, b in enumerate(sp["jitter"]):
        a = sp["test_seeds"][i % 2]
        assert a.placement_seed == b.placement_seed and a.jitter_seed != b.jitter_seed
    assert len({s.jitter_seed for s in sp["jitter"]}) == 4
    train_seeds = {s.placement_seed for s in sp["train"]}
    assert not train_seeds & {s.placement_seed for s in sp["test_seeds"]}


@pytest.mark.parametrize("kind", KINDS)
def test_every_forecaster_kind_builds_and_orders_its_quantiles(kind):
    topo = Dragonfly.preset("df72")
    rng = np.random.default_rng(0)
    counters = rng.uniform(0, 100, (2, 4, topo.n_routers, topo.radix, 3))
    x = torch.as_tensor(node_features(counters, topo, job_share(topo, np.arange(8))), dtype=torch.float32)
    net = Neural("m", 4, kind=kind, d_model=8, gnn_hidden=8, layers=1)
    ei, cls = net.edges(topo)
    out = net.net(x, torch.full((2, 4), 100.0), ei, cls)
    assert out.shape == (2, len(QUANTILES)) and torch.all(out.diff(dim=1) >= 0)
    assert isinstance(net.net, Forecaster)


def test_conformal_offsets_reach_the_nominal_coverage():
    rng = np.random.default_rng(1)
    y = rng.normal(size=2000)
    narrow = np.tile(np.array([-0.5, -0.3, 0.0, 0.3, 0.5]), (2000, 1))
    off = conformal_offsets(narrow, y)
    for j, (lo, hi, level) in enumerate(((1, 3, 0.8), (0, 4, 0.95))):
        cover = np.mean((y >= narrow[:, lo] - off[j]) & (y <= narrow[:, hi] + off[j]))
        assert abs(cover - level) < 0.02


def test_hybrid_fast_forwards_a_tiny_scenario(smoke_run):
    sc = Scenario(preset="df72", target="milc", target_placement="random", corunners=("nekbone",),
                  corunner_placements=("random",), corunner_starts_us=(0.0,), corunner_iterations=(4,),
                  iterations=12, placement_seed=3, jitter_seed=4)
    ref = run_hybrid(sc, None, steps=3)
    assert ref["surrogate_fraction"] == 0 and ref["simulated"].all() and len(ref["runtimes_us"]) == 12
    # the driver without a forecaster gives the same target runtimes as run_workloads
    ds = simulate(sc)
    np.testing.assert_allclose(ref["runtimes_us"], ds["iteration_runtime"].values[0], rtol=1e-9)
    m = surrogate.load(smoke_run)
    out = run_hybrid(sc, m, steps=3, warmup=4, recheck=1, max_surrogate=3, width_threshold=10.0,
                     drift_threshold=100.0, tune_steps=1)
    assert out["switches"] >= 1 and 0 < out["surrogate_fraction"] < 1
    assert (~out["simulated"]).sum() >= 3 and len(out["runtimes_us"]) == 12
    assert abs(out["target_runtime_us"] / ref["target_runtime_us"] - 1) < 0.5


def test_samples_layout(smoke_run):
    with xr.open_dataset(smoke_run / "data" / "train_000.nc") as ds:
        ds = ds.load()
    (s,) = samples_from_runs([ds], steps=3)
    assert s.x.shape[1:] == (3, 36, 16) and s.rt.shape == (len(s), 3)
    np.testing.assert_array_equal(s.y[:-1], s.rt[1:, -1])
    assert s.iteration[0] == 4 and len(s.hist[0]) == 3


def test_ensemble_and_anchor():
    topo = Dragonfly.preset("df72")
    rng = np.random.default_rng(2)
    counters = rng.uniform(0, 100, (2, 4, topo.n_routers, topo.radix, 3))
    x = torch.as_tensor(node_features(counters, topo, job_share(topo, np.arange(8))), dtype=torch.float32)
    rt = torch.as_tensor(rng.uniform(90, 110, (2, 4)), dtype=torch.float32)
    m = Neural("m", 4, kind="smart", members=3, anchor=2, d_model=8, gnn_hidden=8, layers=1)
    assert isinstance(m.net, Ensemble) and len(m.net.members) == 3 and m.args()["members"] == 3
    ei, cls = m.edges(topo)
    each = torch.stack([f(x, rt, ei, cls) for f in m.net.members])
    out = m.net(x, rt, ei, cls)
    torch.testing.assert_close(out, each.mean(0))
    assert torch.all(out.diff(dim=1) >= 0)
    # the anchor is the geometric mean of the last two runtimes: a zero log target reproduces it
    q = m.net.runtime_quantiles(torch.zeros(2, len(QUANTILES)), rt)
    torch.testing.assert_close(q[:, 2], torch.sqrt(rt[:, -1] * rt[:, -2]))
    np.testing.assert_allclose(log_target(np.array([5.0]), np.array([[1.0, 2.0, 4.0, 16.0]]), 2), [np.log(5 / 8)])


def test_recent_samples_skip_fast_forwarded_iterations():
    topo = Dragonfly.preset("df72")
    rng = np.random.default_rng(3)
    counters = [rng.uniform(0, 1, (topo.n_routers, topo.radix, 3)) for _ in range(12)]
    for i in (5, 6, 7):                       # fast-forwarded: no counters
        counters[i] = None
    runtimes = list(100.0 + np.arange(12))
    s = _recent_samples(Samples, "df72", counters, runtimes, 3, topo, job_share(topo, np.arange(8)), keep=10)
    # targets: simulated iterations after 3 consecutive simulated ones (iteration 0 excluded), newest first
    np.testing.assert_array_equal(s.y, [111, 104])
    np.testing.assert_array_equal(s.rt[0], [108, 109, 110])
    assert s.x.shape == (2, 3, topo.n_routers, 16)


def test_untrained_forecaster_is_the_moving_average_and_competes_for_the_epoch(tmp_path):
    """Started at the anchor, the forecaster before any step forecasts the anchor times the training median
    ratio, with the training targets' quantiles as intervals; with no epoch trained it is the one kept."""
    topo = Dragonfly.preset("df72")
    rng = np.random.default_rng(3)
    counters = rng.uniform(0, 100, (40, 4, topo.n_routers, topo.radix, 3))
    x = node_features(counters, topo, job_share(topo, np.arange(8))).astype(np.float32)
    rt = rng.uniform(90, 110, (40, 4))
    s = Samples("df72", x, rt, rng.uniform(90, 110, 40), list(rt), np.zeros(40, int), np.arange(40))
    m = Neural("m", 4, kind="smart", anchor=2, d_model=8, gnn_hidden=8, layers=1)
    cfg = load_case(CASE).train.model_copy(update={"epochs": 0})
    m.fit([s], [], cfg, tmp_path / "m.pt", validation=[s])
    assert m.metadata["selected_epoch"] == -1
    y = log_target(s.y, s.rt, 2)
    with torch.no_grad():
        raw = m._raw(s).numpy()
    np.testing.assert_allclose(raw, np.tile(np.quantile(y, QUANTILES), (40, 1)), atol=1e-5)
    anchor = np.sqrt(rt[:, -1] * rt[:, -2])
    np.testing.assert_allclose(m.predict([s])[:, 2], anchor * np.exp(np.median(y)), rtol=1e-5)
    with pytest.raises(ValueError, match="init must be"):
        Forecaster("smart", init="zeros")

"""Dragonfly topology, packet and flow network models, workloads: checks against derived values."""
import numpy as np
import pytest

from surrogate.dragonfly import (
    APPS,
    Background,
    Dragonfly,
    FlowNetwork,
    Job,
    NetworkConfig,
    PacketNetwork,
    app_rounds,
    max_min_rates,
    place_jobs,
    run_workloads,
)
from surrogate.dragonfly.topology import GLOBAL, LOCAL, PRESETS, TERMINAL

GIB = 2**30 / 1e9      # bytes per ns in one GiB/s
CFG = NetworkConfig()
BW = {k: v * GIB for k, v in CFG.bandwidth_gib_s.items()}


# -- topology -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_topology_invariants(name):
    t = Dragonfly.preset(name)
    a, p, h, g = t.a, t.p, t.h, t.g
    assert (g, t.n_nodes) == (a * h + 1, a * p * g)
    assert t.n_nodes == {"df72": 72, "df342": 342, "df1056": 1056}[name]
    assert np.bincount(t.port_class, minlength=3).tolist() == [a - 1, h, p]
    peers = t.port_peer_router
    for r in range(t.n_routers):
        grp = r // a
        loc = peers[r, t.port_class == LOCAL]
        assert sorted(loc) == [x for x in range(grp * a, grp * a + a) if x != r]     # all-to-all group
        glob = peers[r, t.port_class == GLOBAL]
        assert np.all(glob // a != grp)
    links = t.router_links()
    gl = links["cls"] == GLOBAL
    pairs = np.stack([links["src"][gl] // a, links["dst"][gl] // a], axis=1)
    counts = np.zeros((g, g), int)
    np.add.at(counts, (pairs[:, 0], pairs[:, 1]), 1)
    assert np.array_equal(counts, 1 - np.eye(g, dtype=int))           # one global link per ordered group pair
    directed = set(zip(links["src"].tolist(), links["dst"].tolist()))
    assert all((d, s) in directed for s, d in directed)                  # every link has its reverse
    # in-degree equals out-degree per class: every router receives a-1 local and h global links
    assert np.all(np.bincount(links["dst"][~gl], minlength=t.n_routers) == a - 1)
    assert np.all(np.bincount(links["dst"][gl], minlength=t.n_routers) == h)
    # CODES dally rule: group gi's link to the group `off` places after it leaves router (off-1)//h,
    # and lands on router a-1-src of the destination group
    gi, gj = pairs[:, 0], pairs[:, 1]
    off = (gj - gi) % g
    assert np.all(links["src"][gl] % a == (off - 1) // h)
    assert np.all(links["dst"][gl] % a == a - 1 - links["src"][gl] % a)
    assert np.all(t.port_peer_node[:, t.port_class == TERMINAL].ravel() == np.arange(t.n_nodes))


def test_bad_topology_and_config():
    with pytest.raises(ValueError, match="a .routers per group"):
        Dragonfly(0, 2, 2)
    with pytest.raises(ValueError, match="unknown Dragonfly preset"):
        Dragonfly.preset("df99")
    with pytest.raises(ValueError, match="routing must be one of"):
        NetworkConfig(routing="random")
    with pytest.raises(ValueError, match="window_ns must be a positive multiple"):
        NetworkConfig(window_ns=1234.0)


# -- zero-load latency ------------------------------------------------------------------------------
def _expected_minimal_latency(t, src, dst, size, cfg):
    """hops x latency + serialisation, the hop classes found from the topology's gateway tables."""
    rs, rd = t.node_router[src], t.node_router[dst]
    gs, gd = rs // t.a, rd // t.a
    classes = ["terminal"]
    if gs == gd:
        classes += [] if rs == rd else ["local"]
    else:
        gw = t.gateway_router[gs, gd]
        entry = t.port_peer_router[gw, t.gateway_port[gs, gd]]
        classes += (["local"] if rs != gw else []) + ["global"] + (["local"] if entry != rd else [])
    classes += ["terminal"]
    router_hops = len(classes) - 1      # every channel after the injection link leaves a router
    wire = sum(cfg.link_latency_ns[c] for c in classes)
    ser = sum(size / (cfg.bandwidth_gib_s[c] * GIB) for c in classes)
    return router_hops * cfg.router_delay_ns + wire + ser, len(classes)


@pytest.mark.parametrize("latency", [0.0, 40.0])
def test_zero_load_latency(latency):
    t = Dragonfly.preset("df72")
    cfg = CFG.with_(link_latency_ns={"terminal": latency, "local": 2 * latency, "global": 5 * latency})
    pairs = [(0, 1), (0, 3), (0, 71), (5, 40), (17, 9)]      # same router, same group, other groups
    for src, dst in pairs:
        for size in (4096, 1000):
            net = PacketNetwork(t, cfg)
            ready = 1234.5
            ids = net.submit(src, dst, size, ready)
            net.run_until(20_000)
            expected, n_hops = _expected_minimal_latency(t, src, dst, size, cfg)
            assert net.message_done_ns[ids][0] - ready == pytest.approx(expected, rel=1e-9)
            assert net.stats["router_hops_sum"] == n_hops - 2


def test_zero_load_latency_sheet_values():
    # the CODES run log's per-hop serialisation of a 4 KiB chunk: 238.4 / 726.6 / 811.6 ns
    assert 4096 / BW["terminal"] == pytest.approx(238.4, abs=0.05)
    assert 4096 / BW["local"] == pytest.approx(726.6, abs=0.05)
    assert 4096 / BW["global"] == pytest.approx(811.6, abs=0.05)


# -- throughput -----------------------------------------------------------------------------------
def _offered(net, t, load_gib_s, T, dst_of, rng):
    lam = load_gib_s * GIB
    n_per = int(lam * T / 4096)
    src = np.repeat(np.arange(t.n_nodes), n_per)
    ready = np.tile(np.arange(n_per) * 4096 / lam, t.n_nodes) + rng.uniform(0, 4096 / lam, src.size)
    net.submit(src, dst_of(src), 4096, ready)


def _accepted(t, routing, load, dst_of, T=36_000.0, warm=12_000.0, seed=0):
    rng = np.random.default_rng(seed)
    net = PacketNetwork(t, routing=routing, seed=seed, window_ns=6_000.0)
    _offered(net, t, load, T, lambda s: dst_of(s, rng), rng)
    net.run_until(warm)
    d0 = net.stats["delivered_bytes"]
    net.run_until(T)
    return (net.stats["delivered_bytes"] - d0) / (T - warm) / t.n_nodes / GIB, net


def _uniform(t):
    return lambda s, rng: (s + rng.integers(1, t.n_nodes, s.size)) % t.n_nodes


def uniform_bounds(t, cfg=CFG):
    """Per-node saturation throughput (GiB/s) under uniform random traffic, from the link bandwidths.

    Each node sends lam, spread evenly over the N-1 other nodes. Minimal: the global link from group i to
    group j carries the (ap)^2 pairs' traffic, (ap)^2 lam / (N-1). A local link r1 -> r2 carries r1's
    traffic to the h*a*p nodes behind r2's global links, the p nodes on r2, and what enters through r1's
    h global links for r2's p nodes: p (2ahp + p) lam / (N-1). Valiant sends every inter-group packet
    over two global links, spread evenly over all g(g-1): 2 p lam (N - ap) / (h (N-1)) per link.
    """
    a, p, h, N = t.a, t.p, t.h, t.n_nodes
    B = cfg.bandwidth_gib_s
    glob_min = B["global"] * (N - 1) / (a * p) ** 2
    local_min = B["local"] * (N - 1) / (p * (2 * a * h * p + p))
    glob_val = B["global"] * h * (N - 1) / (2 * p * (N - a * p))
    return glob_min, local_min, glob_val


def test_uniform_random_saturates_at_global_bound():
    t = Dragonfly.preset("df72")
    glob_min, local_min, glob_val = uniform_bounds(t)
    assert glob_min < local_min < CFG.bandwidth_gib_s["terminal"]      # global links bind first
    for tt in (Dragonfly.preset("df342"), Dragonfly.preset("df1056")):
        gm, lm, _ = uniform_bounds(tt)
        assert gm < lm
    acc_min, net = _accepted(t, "minimal", 8.0, _uniform(t))
    acc_val, _ = _accepted(t, "valiant", 8.0, _uniform(t))
    assert 0.9 * glob_min <= acc_min <= 1.01 * glob_min
    assert 0.9 * glob_val <= acc_val <= 1.01 * glob_val
    # below saturation everything offered is accepted
    acc_low, _ = _accepted(t, "minimal", 0.5 * glob_min, _uniform(t))
    assert acc_low == pytest.approx(0.5 * glob_min, rel=0.05)
    # credits: no buffer ever holds more than its size
    cap = np.repeat(net.ch_buf, net.occ.size // net.ch_buf.size)
    assert np.all(net.occ <= cap + 1e-6) and np.all(net.occ >= -1e-6)


def test_adversarial_nearest_group():
    t = Dragonfly.preset("df72")
    ap = t.a * t.p

    def nearest_group(s, rng):
        return ((t.node_group(s) + 1) % t.g) * ap + rng.integers(0, ap, s.size)

    acc = {r: _accepted(t, r, 4.0, nearest_group) for r in ("minimal", "valiant", "par", "ugal")}
    bound_min = CFG.bandwidth_gib_s["global"] / ap          # a*p nodes share one global link
    assert acc["minimal"][0] == pytest.approx(bound_min, rel=0.05)
    for r in ("valiant", "par", "ugal"):
        assert acc[r][0] > 2.5 * acc["minimal"][0], r
    assert acc["par"][1].stats["nonminimal_packets"] > 0
    # the congested global links show back-pressure in the port counters
    c = acc["minimal"][1].counters()
    gl = t.port_class == GLOBAL
    assert c["busy"][..., gl].sum() > 0 and c["stalls"].sum() > 0


def test_bytes_conserved_and_counted():
    t = Dragonfly.preset("df72")
    net = PacketNetwork(t, routing="par", window_ns=5_000.0)
    rng = np.random.default_rng(1)
    src = rng.integers(0, 72, 300)
    dst = (src + rng.integers(1, 72, 300)) % 72
    size = rng.integers(1, 30_000, 300)
    net.submit(src, dst, size, rng.uniform(0, 5_000, 300))
    net.run_until(200_000)
    assert np.all(np.isfinite(net.message_done_ns)) and net.n_packets == 0
    assert net.stats["delivered_bytes"] == size.sum()
    c = net.counters()
    term = t.port_class == TERMINAL
    assert c["bytes"][..., term].sum() == size.sum()            # ejection ports see every byte once
    assert np.allclose(net.occ, 0)


# -- flow level -----------------------------------------------------------------------------------
def test_max_min_rates_textbook():
    # links 0 (cap 1) and 1 (cap 2); flow A uses both, B only link 0, C only link 1
    A = np.array([[1, 1, 0], [1, 0, 1]])
    r = max_min_rates(A, np.array([1.0, 2.0]))
    assert np.allclose(r, [0.5, 0.5, 1.5])


def test_flow_model_group_to_group():
    t = Dragonfly.preset("df72")
    size = 1e6
    net = FlowNetwork(t, routing="minimal")
    ids = net.submit(np.arange(8), np.arange(8) + 8, size, 0.0)
    net.run_until(3e6)
    transfer = 8 * size / BW["global"]                         # 8 flows share one global link fairly
    assert np.all(net.message_done_ns[ids] >= transfer)
    assert np.all(net.message_done_ns[ids] <= transfer + 5_000)
    pk = PacketNetwork(t)
    ids = pk.submit(np.arange(8), np.arange(8) + 8, size, 0.0)
    pk.run_until(3e6)
    assert pk.message_done_ns[ids].max() == pytest.approx(net.message_done_ns[ids].max(), rel=0.02)


# -- workloads ------------------------------------------------------------------------------------
@pytest.mark.parametrize("P", [8, 12, 13])
def test_allreduce_rounds_reach_everyone(P):
    for app in ("cosmoflow", "nekbone"):
        rounds = app_rounds(app, P)[1:] if app == "nekbone" else app_rounds(app, P)
        know = np.eye(P, dtype=bool)
        for s, d, _ in rounds:
            new = know.copy()
            new[d] |= know[s]
            know = new
        assert know.all(), app


def test_halo_patterns():
    s, d, b = app_rounds("milc", 3 * 4 * 5 * 5)[0]
    assert np.all(np.bincount(s) == 8) and np.all(np.bincount(d) == 8) and np.all(b == 497_664)
    s, d, _ = app_rounds("nekbone", 27)[0]
    assert np.all(np.bincount(s) == 26)
    s, d, _ = app_rounds("fft", 10)[0]
    assert len(set(zip(s.tolist(), d.tolist()))) == 90


def test_placement_and_bad_jobs():
    t = Dragonfly.preset("df72")
    nodes = place_jobs(t, [Job("milc", 16), Job("fft", 20, placement="random")], seed=3)
    assert np.array_equal(nodes[0], np.arange(16))
    assert len(np.intersect1d(nodes[0], nodes[1])) == 0 and len(set(nodes[1])) == 20
    with pytest.raises(ValueError, match="need 80 ranks .* 72 nodes"):
        place_jobs(t, [Job("milc", 40), Job("fft", 40)])
    with pytest.raises(ValueError, match="Job.app must be one of"):
        Job("lammps", 8)
    with pytest.raises(ValueError, match="Job.placement"):
        Job("milc", 8, placement="striped")


def test_run_workloads_dataset():
    t = Dragonfly.preset("df72")
    jobs = [Job("milc", 24, iterations=3, compute_us=20, message_scale=0.05, placement="random"),
            Job("nekbone", 16, iterations=2, compute_us=10, start_us=30, jitter=0.0),
            Job("io", 8, iterations=2, compute_us=5, message_scale=0.05),
            Job("fft", 8, iterations=2, compute_us=5, message_scale=0.5, placement="random")]
    ds = run_workloads(t, jobs, background=Background(0.5), routing="par", window_ns=10_000.0, seed=2)
    for name, v in list(ds.data_vars.items()) + list(ds.coords.items()):
        assert "units" in v.attrs and "long_name" in v.attrs, name
    assert ds.port_bytes.dims == ("window", "router", "port")
    rt = ds.iteration_runtime.values
    assert np.all(rt[0, :3] > 20) and np.all(np.isfinite(rt[1:, :2])) and np.isnan(rt[1, 2])
    assert ds.job_start.values[1] < ds.iteration_end.values[1, 0]
    # every iteration lasts at least its compute phase plus one message's zero-load latency
    assert np.all(rt[:, :2] > np.array([20, 10, 5, 5])[:, None])
    assert float(ds.port_bytes.sum()) > 0


def test_compute_jitter_setting():
    t = Dragonfly.preset("df72")
    spread = {}
    for jitter in (0.0, 0.3):
        ds = run_workloads(t, [Job("fft", 8, iterations=6, compute_us=200, jitter=jitter, message_scale=0.1)],
                           seed=0, window_ns=50_000.0)
        spread[jitter] = float(np.std(ds.iteration_runtime.values[0, 1:]))
    assert spread[0.3] > 10 * max(spread[0.0], 0.1)


def test_flow_fidelity_runs_same_jobs():
    t = Dragonfly.preset("df72")
    job = [Job("cosmoflow", 16, iterations=2, compute_us=10, message_scale=0.05, jitter=0.0)]
    pk = run_workloads(t, job, fidelity="packet", window_ns=20_000.0)
    fl = run_workloads(t, job, fidelity="flow", window_ns=20_000.0)
    assert np.all(np.isnan(fl.port_busy_time.values))
    assert fl.iteration_runtime.values[0, 1] == pytest.approx(pk.iteration_runtime.values[0, 1], rel=0.3)
    with pytest.raises(ValueError, match="fidelity must be one of"):
        run_workloads(t, job, fidelity="exact")


def test_apps_listed():
    assert set(APPS) == {"milc", "nekbone", "cosmoflow", "io", "fft"}

"""Packet-model throughput: simulated microseconds per wall second at 72, 342 and 1,056 nodes.

Uniform random traffic of 4 KiB messages at a fraction of the minimal-routing saturation load, after
a warm-up; also the flow model on the same traffic. Usage: python benchmarks/dragonfly_sim.py [sim_us]
"""
import resource
import sys
import time

import numpy as np

from surrogate.dragonfly import Dragonfly, PacketNetwork

GIB = 2**30 / 1e9


def offered_traffic(net, t, load_gib_s, T_ns, rng):
    lam = load_gib_s * GIB
    n_per = int(lam * T_ns / 4096)
    src = np.repeat(np.arange(t.n_nodes), n_per)
    ready = np.tile(np.arange(n_per) * 4096 / lam, t.n_nodes) + rng.uniform(0, 4096 / lam, src.size)
    dst = (src + rng.integers(1, t.n_nodes, src.size)) % t.n_nodes
    net.submit(src, dst, 4096, ready)


def measure(model, preset, routing, load_fraction, sim_us, warm_us=10.0):
    t = Dragonfly.preset(preset)
    bound = 4.7 * (t.n_nodes - 1) / (t.a * t.p) ** 2          # minimal, global links (GiB/s per node)
    net = model(t, routing=routing, window_ns=10_000.0)
    T = (warm_us + sim_us) * 1e3
    offered_traffic(net, t, load_fraction * bound, T, np.random.default_rng(0))
    net.run_until(warm_us * 1e3)
    w0 = time.perf_counter()
    net.run_until(T)
    wall = time.perf_counter() - w0
    return sim_us / wall, wall, getattr(net, "n_packets", 0)


def main():
    sim_us = float(sys.argv[1]) if len(sys.argv) > 1 else 20.0
    rows = []
    print(f"{'preset':8} {'model':7} {'routing':8} {'load':>5} {'sim us':>7} {'wall s':>7} "
          f"{'sim us / wall s':>16} {'packets':>8}")
    for preset in ("df72", "df342", "df1056"):
        for model, name in ((PacketNetwork, "packet"),):
            for routing in ("minimal", "par"):
                for load in (0.5, 0.9):
                    rate, wall, npk = measure(model, preset, routing, load, sim_us)
                    rows.append((preset, name, routing, load, rate))
                    print(f"{preset:8} {name:7} {routing:8} {load:5.1f} {sim_us:7.1f} {wall:7.2f} "
                          f"{rate:16.1f} {npk:8d}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak resident memory: {rss:.2f} GiB")


if __name__ == "__main__":
    main()

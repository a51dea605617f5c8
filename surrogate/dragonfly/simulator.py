"""Dragonfly network models: a time-stepped packet model and a max-min fair flow model.

Both take messages with `submit(src, dst, size_bytes, t_ready_ns)` and advance with `run_until(t_ns)`;
`message_done_ns` then holds each message's delivery time (NaN while in flight). Times are in ns.

Packet model (`PacketNetwork`), vectorised over packets with numpy:
- Messages are cut into packets of `packet_bytes` (CODES: chunk = packet = 4 KiB) by the node's NIC,
  which serves its messages first-come first-served.
- A packet crosses channels (node->router injection, router output ports). Sending on channel c takes
  size / bandwidth(c) on c's serialiser, then latency(c) later the packet is at the next router
  (router output channels carry the router delay, 100 ns in CODES, plus an optional wire latency).
  Zero-load latency of a packet is therefore sum over hops of (size / bandwidth + latency).
- Credits: every channel has one downstream buffer per virtual channel; the virtual channel is the
  packet's hop index, which rises along every path, so buffer dependencies are acyclic (no deadlock).
  A packet may leave only if its downstream buffer has room for it; it holds that room until it leaves
  the next router (CODES credit flow control). Buffers: 16 KiB local/global, 32 KiB terminal.
- Time advances in steps of `dt_ns`; inside a step each channel serialises packets back to back with
  exact start/finish times, so latencies are not rounded to the step; only the visibility of credits,
  queue lengths and routing decisions is step-granular.
- Counters per router port and window, as CODES' windowed port samples: bytes sent, busy time (time the
  port had a packet blocked because its downstream buffer was full) and stalled packets.

Routing (`routing=`): "minimal", "valiant" (random intermediate group chosen at the source), "ugal"
(UGAL-L: one choice at the source router between minimal and one random Valiant path, on local queue
bytes x hop count) and "par" (progressive adaptive as CODES dragonfly-dally: re-decided at every router
of the source group while still minimal; score = downstream buffer bytes + bytes queued for the port;
non-minimal scores multiplied by `nonminimal_bias` = 2; minimal if score_min <= adaptive_threshold or
score_min <= biased score_nonmin; once non-minimal, the packet goes through its intermediate group).
Traffic inside a group always routes minimally (one local hop).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .topology import GLOBAL, PORT_CLASS_NAMES, TERMINAL, Dragonfly

ROUTINGS = ("minimal", "valiant", "ugal", "par")
GIB_PER_S_TO_BYTES_PER_NS = 2**30 / 1e9
N_VC = 8  # hop index 0 (injection) .. 7 (ejection after the longest PAR path, 6 router hops)
_WAIT, _FLY = 0, 1


@dataclass(frozen=True)
class NetworkConfig:
    """Link and router parameters; defaults are the CODES dragonfly-dally 1,056-node settings."""

    bandwidth_gib_s: dict = field(default_factory=lambda: {"terminal": 16.0, "local": 5.25, "global": 4.7})
    link_latency_ns: dict = field(default_factory=lambda: {"terminal": 0.0, "local": 0.0, "global": 0.0})
    buffer_bytes: dict = field(default_factory=lambda: {"terminal": 32768, "local": 16384, "global": 16384})
    router_delay_ns: float = 100.0
    packet_bytes: int = 4096
    routing: str = "minimal"
    adaptive_threshold_bytes: float = 0.0
    nonminimal_bias: float = 2.0
    dt_ns: float = 500.0
    window_ns: float = 100_000.0
    seed: int = 0

    def __post_init__(self):
        if self.routing not in ROUTINGS:
            raise ValueError(f"routing must be one of {ROUTINGS}, got {self.routing!r}")
        for name in ("bandwidth_gib_s", "link_latency_ns", "buffer_bytes"):
            d = getattr(self, name)
            if set(d) != set(PORT_CLASS_NAMES):
                raise ValueError(f"{name} needs exactly the keys {PORT_CLASS_NAMES}, got {sorted(d)}")
            lower = 0.0 if name == "link_latency_ns" else None
            for k, v in d.items():
                if not np.isfinite(v) or (v < 0 if lower == 0.0 else v <= 0):
                    raise ValueError(f"{name}[{k!r}] must be a finite {'non-negative' if lower == 0.0 else 'positive'}"
                                     f" number, got {v!r}")
        if self.packet_bytes < 1:
            raise ValueError(f"packet_bytes must be at least 1, got {self.packet_bytes}")
        if min(self.buffer_bytes.values()) < self.packet_bytes:
            raise ValueError(f"every buffer_bytes value must hold one packet ({self.packet_bytes} B), "
                             f"got {self.buffer_bytes}")
        if not self.dt_ns > 0:
            raise ValueError(f"dt_ns must be positive, got {self.dt_ns}")
        steps = self.window_ns / self.dt_ns
        if self.window_ns <= 0 or abs(steps - round(steps)) > 1e-9:
            raise ValueError(f"window_ns must be a positive multiple of dt_ns={self.dt_ns}, got {self.window_ns}")
        if self.nonminimal_bias < 1:
            raise ValueError(f"nonminimal_bias must be at least 1 (1 = no bias), got {self.nonminimal_bias}")

    def with_(self, **changes) -> "NetworkConfig":
        return replace(self, **changes)


def next_port(topo: Dragonfly, r, dst_node, intermediate_group):
    """Output port at routers r toward dst_node, through intermediate_group where it is >= 0 (not yet reached).

    Minimal hop-by-hop rule: eject at the destination router; inside the target group one local hop;
    otherwise to the group's gateway router for the target group (local hop) and over its global link.
    """
    gr = topo.router_group[r]
    dr = topo.node_router[dst_node]
    dg = topo.router_group[dr]
    ig = intermediate_group
    target = np.where(ig >= 0, ig, dg)
    target = np.where(target == gr, dg, target)          # keeps the table lookup valid inside the group
    gw = topo.gateway_router[gr, target]
    local_to = lambda x: topo.local_port[topo.router_local[r], topo.router_local[x]]  # noqa: E731
    port = np.where(r == gw, topo.gateway_port[gr, target], local_to(gw))
    same = (gr == dg) & (ig < 0)
    return np.where(same & (r == dr), topo.node_port[dst_node], np.where(same, local_to(dr), port))


class _MessageTable:
    """Growing arrays of messages (struct of arrays)."""

    FIELDS = {"src": np.int64, "dst": np.int64, "size": np.float64, "ready": np.float64,
              "packetised": np.float64, "delivered": np.float64, "last_arrival": np.float64,
              "done": np.float64, "tag": np.int64}

    def __init__(self):
        self.n = 0
        self._cap = 1024
        self.a = {k: np.zeros(self._cap, t) for k, t in self.FIELDS.items()}

    def add(self, src, dst, size, ready, tag) -> np.ndarray:
        m = len(src)
        while self.n + m > self._cap:
            self._cap *= 2
            for k, v in self.a.items():
                grown = np.zeros(self._cap, v.dtype)
                grown[: self.n] = v[: self.n]
                self.a[k] = grown
        ids = np.arange(self.n, self.n + m)
        for k, v in (("src", src), ("dst", dst), ("size", size), ("ready", ready), ("tag", tag)):
            self.a[k][ids] = v
        self.a["packetised"][ids] = 0.0
        self.a["delivered"][ids] = 0.0
        self.a["last_arrival"][ids] = -np.inf
        self.a["done"][ids] = np.nan
        self.n += m
        return ids

    def __getitem__(self, k):
        return self.a[k][: self.n]


class _NetworkBase:
    """Shared message interface and window bookkeeping of both network models."""

    def __init__(self, topology: Dragonfly, config: NetworkConfig | None = None, **changes):
        if not isinstance(topology, Dragonfly):
            raise TypeError(f"topology must be a Dragonfly, got {type(topology).__name__}")
        config = (config or NetworkConfig()).with_(**changes) if changes else (config or NetworkConfig())
        self.topo, self.cfg = topology, config
        self.now = 0.0
        self.msgs = _MessageTable()
        self._pending = np.zeros(0, np.int64)       # messages not yet fully handed to the network
        self.rng = np.random.default_rng(config.seed)
        cls = topology.channel_class
        names = np.array(PORT_CLASS_NAMES)[cls]
        self.ch_bw = np.array([config.bandwidth_gib_s[n] for n in names]) * GIB_PER_S_TO_BYTES_PER_NS
        router_out = topology.channel_src_router >= 0
        self.ch_lat = (np.array([config.link_latency_ns[n] for n in names])
                       + np.where(router_out, config.router_delay_ns, 0.0))
        self.ch_buf = np.array([config.buffer_bytes[n] for n in names], dtype=np.float64)
        n_ch = topology.n_channels
        self._win = {k: np.zeros(n_ch) for k in ("bytes", "busy", "stalls")}
        self.windows: dict[str, list] = {"end_ns": [], "bytes": [], "busy": [], "stalls": []}
        self._win_end = config.window_ns

    # -- public interface -----------------------------------------------------------------------
    def submit(self, src, dst, size_bytes, t_ready_ns, tag=0) -> np.ndarray:
        """Queue messages (arrays or scalars); returns their ids. A message may not start before now."""
        src, dst, size, ready = np.broadcast_arrays(np.atleast_1d(src), np.atleast_1d(dst),
                                                    np.atleast_1d(size_bytes).astype(float),
                                                    np.atleast_1d(t_ready_ns).astype(float))
        tag = np.broadcast_to(np.atleast_1d(tag), src.shape)
        N = self.topo.n_nodes
        for name, v in (("src", src), ("dst", dst)):
            if v.size and (v.min() < 0 or v.max() >= N):
                raise ValueError(f"{name} node ids must lie in [0, {N - 1}] for {self.topo!r}")
        if np.any(src == dst):
            raise ValueError("src and dst must differ (a node does not send to itself over the network)")
        if size.size and not (np.all(np.isfinite(size)) and size.min() >= 1):
            raise ValueError("size_bytes must be finite and at least 1")
        if ready.size and not np.all(np.isfinite(ready)):
            raise ValueError("t_ready_ns must be finite")
        ids = self.msgs.add(src.ravel(), dst.ravel(), size.ravel(), ready.ravel(), tag.ravel())
        self._pending = np.concatenate([self._pending, ids])
        return ids

    @property
    def message_done_ns(self) -> np.ndarray:
        return self.msgs["done"]

    def counters(self) -> dict[str, np.ndarray]:
        """Finished windows: end time (ns) and per-router-port bytes, busy ns and stalls, (window, router, port)."""
        R, k = self.topo.n_routers, self.topo.radix
        out = {"end_ns": np.array(self.windows["end_ns"])}
        for name in ("bytes", "busy", "stalls"):
            w = self.windows[name]
            out[name] = np.array(w)[:, : R * k].reshape(-1, R, k) if w else np.zeros((0, R, k))
        return out

    # -- windows ----------------------------------------------------------------------------------
    def _close_windows_until(self, t):
        while t >= self._win_end - 1e-9:
            self.windows["end_ns"].append(self._win_end)
            for name in ("bytes", "busy", "stalls"):
                self.windows[name].append(self._win[name].copy())
                self._win[name][:] = 0.0
            self._win_end += self.cfg.window_ns


class PacketNetwork(_NetworkBase):
    """Time-stepped packet-level Dragonfly with credit flow control (see the module docstring)."""

    _PFIELDS = {"msg": np.int64, "dst": np.int64, "size": np.float64, "state": np.int8, "t": np.float64,
                "out": np.int64, "inch": np.int64, "invc": np.int64, "hops": np.int64, "ig": np.int64,
                "adaptive": bool, "stalled": bool, "born": np.float64}

    def __init__(self, topology: Dragonfly, config: NetworkConfig | None = None, **changes):
        super().__init__(topology, config, **changes)
        self.pk = {k: np.zeros(0, t) for k, t in self._PFIELDS.items()}
        self.occ = np.zeros(topology.n_channels * N_VC)   # bytes held in each (channel, vc) buffer
        self.free_at = np.zeros(topology.n_channels)       # when each channel's serialiser is free
        c = self.cfg
        self._nic_queue = int(np.ceil(c.dt_ns * self.ch_bw[-1] / c.packet_bytes)) + 2
        self.stats = {"delivered_packets": 0, "delivered_bytes": 0.0, "latency_ns_sum": 0.0,
                      "router_hops_sum": 0, "nonminimal_packets": 0}
        self.delivered_latency_ns: list[np.ndarray] = []

    @property
    def n_packets(self) -> int:
        return self.pk["msg"].size

    def idle(self) -> bool:
        return self.n_packets == 0 and self._pending.size == 0

    def run_until(self, t_ns: float):
        """Advance whole steps until now >= t_ns; empty stretches are skipped without stepping."""
        dt = self.cfg.dt_ns
        while self.now < t_ns - 1e-9:
            if self.n_packets == 0:
                nxt = self.msgs["ready"][self._pending].min() if self._pending.size else np.inf
                jump_to = min(np.floor(nxt / dt) * dt, np.ceil(t_ns / dt - 1e-9) * dt)
                if jump_to > self.now:
                    self._close_windows_until(jump_to)
                    self.now = jump_to
                    continue
            self.step()

    def step(self):
        _t0, t1 = self.now, self.now + self.cfg.dt_ns
        self._arrivals(t1)
        self._inject(t1)
        self._send(t1)
        self.now = t1
        self._close_windows_until(t1)

    # -- phases --------------------------------------------------------------------------------
    def _arrivals(self, t1):
        pk, topo = self.pk, self.topo
        arrive = (pk["state"] == _FLY) & (pk["t"] < t1)
        if not arrive.any():
            return
        at_node = arrive & (topo.channel_dst_node[pk["out"]] >= 0)
        if at_node.any():
            i = np.flatnonzero(at_node)
            self.occ -= np.bincount(pk["inch"][i] * N_VC + pk["invc"][i], weights=pk["size"][i],
                                    minlength=self.occ.size)
            m = pk["msg"][i]
            msgs = self.msgs
            np.add.at(msgs.a["delivered"], m, pk["size"][i])
            np.maximum.at(msgs.a["last_arrival"], m, pk["t"][i])
            um = np.unique(m)
            fin = um[msgs.a["delivered"][um] >= msgs.a["size"][um] - 1e-6]
            msgs.a["done"][fin] = msgs.a["last_arrival"][fin]
            lat = pk["t"][i] - pk["born"][i]
            s = self.stats
            s["delivered_packets"] += i.size
            s["delivered_bytes"] += pk["size"][i].sum()
            s["latency_ns_sum"] += lat.sum()
            s["router_hops_sum"] += int(pk["hops"][i].sum()) - 2 * i.size  # minus injection and ejection
            self.delivered_latency_ns.append(lat)
            keep = ~at_node
            for k in pk:
                pk[k] = pk[k][keep]
            arrive = arrive[keep]
        i = np.flatnonzero(arrive)
        if i.size:
            pk["state"][i] = _WAIT
            self._route(i, topo.channel_dst_router[pk["out"][i]])

    def _route(self, i, r):
        """Choose the next output channel of packets i now at routers r."""
        topo, pk, cfg = self.topo, self.pk, self.cfg
        _a, k = topo.a, topo.radix
        gr = topo.router_group[r]
        dr = topo.node_router[pk["dst"][i]]
        dg = topo.router_group[dr]
        ig = pk["ig"][i]
        ig = np.where(ig == gr, -1, ig)                      # reached the intermediate group
        leaving_src = pk["adaptive"][i] & (gr != dg)
        if cfg.routing in ("ugal", "par"):
            decide = leaving_src & (ig < 0)
            if cfg.routing == "ugal":
                decide &= pk["hops"][i] == 1                  # only at the source router
            if decide.any():
                ig = self._adaptive_choice(i, r, gr, dr, dg, ig, decide)
        port = next_port(topo, r, pk["dst"][i], ig)
        out = r * k + port
        pk["ig"][i] = ig
        pk["out"][i] = out
        # adaptivity ends once the packet leaves its source group or has turned non-minimal
        pk["adaptive"][i] &= (ig < 0) & (topo.port_class[port] != GLOBAL)
        if cfg.routing == "ugal":
            pk["adaptive"][i] = False

    def _random_other_group(self, g1, g2):
        """A random group differing from g1 and g2 (which differ), per element."""
        lo, hi = np.minimum(g1, g2), np.maximum(g1, g2)
        x = self.rng.integers(0, self.topo.g - 2, size=g1.size)
        x += x >= lo
        x += x >= hi
        return x

    def _first_port(self, r, gr, target_group):
        topo = self.topo
        gw = topo.gateway_router[gr, target_group]
        return np.where(r == gw, topo.gateway_port[gr, target_group],
                        topo.local_port[topo.router_local[r], topo.router_local[gw]]), gw

    def _adaptive_choice(self, i, r, gr, dr, dg, ig, decide):
        topo, cfg, k = self.topo, self.cfg, self.topo.radix
        j = np.flatnonzero(decide)
        rj, grj, dgj, drj = r[j], gr[j], dg[j], dr[j]
        cand = self._random_other_group(grj, dgj)
        pmin, gwmin = self._first_port(rj, grj, dgj)
        pnon, gwnon = self._first_port(rj, grj, cand)
        queued = np.bincount(self.pk["out"][self.pk["state"] == _WAIT],
                             weights=self.pk["size"][self.pk["state"] == _WAIT], minlength=topo.n_channels)
        occ = self.occ.reshape(-1, N_VC).sum(axis=1)
        score = lambda ch: occ[ch] + queued[ch]  # noqa: E731
        s_min, s_non = score(rj * k + pmin), score(rj * k + pnon)
        if cfg.routing == "par":
            minimal = (s_min <= cfg.adaptive_threshold_bytes) | (s_min <= cfg.nonminimal_bias * s_non)
        else:  # UGAL-L: queue x remaining router hops
            entry = lambda g_from, g_to: topo.channel_dst_router[  # noqa: E731
                topo.gateway_router[g_from, g_to] * k + topo.gateway_port[g_from, g_to]]
            h_min = (rj != gwmin) + 1 + (entry(grj, dgj) != drj)
            e_i = entry(grj, cand)
            h_non = (rj != gwnon) + 1 + (e_i != topo.gateway_router[cand, dgj]) + 1 + (entry(cand, dgj) != drj)
            minimal = s_min * h_min <= s_non * h_non + cfg.adaptive_threshold_bytes
        ig = ig.copy()
        ig[j[~minimal]] = cand[~minimal]
        self.stats["nonminimal_packets"] += int((~minimal).sum())
        return ig

    def _inject(self, t1):
        pend, msgs, cfg, topo = self._pending, self.msgs, self.cfg, self.topo
        if pend.size == 0:
            return
        ready = msgs["ready"][pend] < t1
        m = pend[ready]
        if m.size == 0:
            return
        src = msgs["src"][m]
        order = np.lexsort((m, msgs["ready"][m], src))
        m, src = m[order], src[order]
        P = cfg.packet_bytes
        remaining = np.ceil((msgs["size"][m] - msgs["packetised"][m]) / P).astype(np.int64)
        pk = self.pk
        at_nic = (pk["state"] == _WAIT) & (pk["hops"] == 0)
        in_queue = np.bincount(pk["out"][at_nic] - topo.n_routers * topo.radix, minlength=topo.n_nodes)
        budget = np.maximum(self._nic_queue - in_queue, 0)[src]
        cum = np.cumsum(remaining)
        first = np.r_[True, src[1:] != src[:-1]]
        seg_base = np.maximum.accumulate(np.where(first, cum - remaining, 0))
        before = cum - remaining - seg_base
        take = np.clip(budget - before, 0, remaining)
        n_new = int(take.sum())
        if n_new:
            rep = np.repeat(m, take)
            starts = np.cumsum(take) - take
            j = np.arange(n_new) - np.repeat(starts, take)
            offset = msgs["packetised"][rep] + j * P
            size = np.minimum(P, msgs["size"][rep] - offset)
            np.add.at(msgs.a["packetised"], rep, size)
            sg = topo.node_group(msgs["src"][rep])
            dst = msgs["dst"][rep]
            dg = topo.node_group(dst)
            ig = np.full(n_new, -1, np.int64)
            if cfg.routing == "valiant":
                inter = sg != dg
                ig[inter] = self._random_other_group(sg[inter], dg[inter])
            ready_t = msgs["ready"][rep]
            new = {"msg": rep, "dst": dst, "size": size, "state": np.full(n_new, _WAIT, np.int8),
                   "t": ready_t, "out": topo.injection_channel(msgs["src"][rep]),
                   "inch": np.full(n_new, -1, np.int64), "invc": np.zeros(n_new, np.int64),
                   "hops": np.zeros(n_new, np.int64), "ig": ig, "adaptive": np.ones(n_new, bool),
                   "stalled": np.zeros(n_new, bool), "born": ready_t}
            for k in pk:
                pk[k] = np.concatenate([pk[k], new[k]])
        done = msgs["packetised"][pend] >= msgs["size"][pend] - 1e-6
        self._pending = pend[~done]

    def _send(self, t1):
        pk, cfg, topo = self.pk, self.cfg, self.topo
        w = np.flatnonzero((pk["state"] == _WAIT) & (pk["t"] < t1))
        if w.size == 0:
            return
        ch, vc, size, t = pk["out"][w], pk["hops"][w], pk["size"][w], pk["t"][w]
        # credits: FIFO per (channel, vc); a packet goes only if the bytes ahead of it and itself fit
        key = ch * N_VC + vc
        order = np.lexsort((t, key))
        ks, ss = key[order], size[order]
        cum = np.cumsum(ss)
        first = np.r_[True, ks[1:] != ks[:-1]]
        base = np.maximum.accumulate(np.where(first, cum - ss, 0.0))
        fits = (cum - base) <= (self.ch_buf[ks // N_VC] - self.occ[ks]) + 1e-6
        ok = np.empty(w.size, bool)
        ok[order] = fits
        blocked = w[~ok]
        if blocked.size:
            bch = pk["out"][blocked]
            self._win["busy"][np.unique(bch)] += cfg.dt_ns
            new_stall = ~pk["stalled"][blocked]
            self._win["stalls"] += np.bincount(bch[new_stall], minlength=topo.n_channels)
            pk["stalled"][blocked] = True
            pk["t"][blocked] = np.maximum(pk["t"][blocked], t1)    # credit seen next step at the earliest
        cand = w[ok]
        if cand.size == 0:
            return
        cand = cand[np.lexsort((pk["t"][cand], pk["out"][cand]))]
        cch = pk["out"][cand]
        first = np.r_[True, cch[1:] != cch[:-1]]
        pos = np.arange(cand.size)
        rank = pos - np.maximum.accumulate(np.where(first, pos, 0))
        open_ch = np.ones(topo.n_channels, bool)
        sent_parts = []
        for r in range(int(rank.max()) + 1):
            sel = cand[rank == r]
            c = pk["out"][sel]
            live = open_ch[c]
            sel, c = sel[live], c[live]
            if sel.size == 0:
                break
            start = np.maximum(pk["t"][sel], self.free_at[c])
            go = start < t1
            open_ch[c[~go]] = False
            if not go.any():
                break
            sel, c, start = sel[go], c[go], start[go]
            finish = start + pk["size"][sel] / self.ch_bw[c]
            self.free_at[c] = finish
            pk["t"][sel] = finish + self.ch_lat[c]
            sent_parts.append(sel)
        if not sent_parts:
            return
        sent = np.concatenate(sent_parts)
        c, s = pk["out"][sent], pk["size"][sent]
        nvc = self.occ.size
        self.occ += np.bincount(c * N_VC + pk["hops"][sent], weights=s, minlength=nvc)
        held = pk["inch"][sent] >= 0
        self.occ -= np.bincount(pk["inch"][sent][held] * N_VC + pk["invc"][sent][held], weights=s[held],
                                minlength=nvc)
        self._win["bytes"] += np.bincount(c, weights=s, minlength=topo.n_channels)
        pk["inch"][sent] = c
        pk["invc"][sent] = pk["hops"][sent]
        pk["hops"][sent] += 1
        pk["state"][sent] = _FLY
        pk["stalled"][sent] = False


# ------------------------------------------------------------------------------------------------
# Flow level
# ------------------------------------------------------------------------------------------------
def route_channels(topo: Dragonfly, src, dst, intermediate_group=None) -> list[np.ndarray]:
    """Channels of the routes src -> dst (minimal, or through intermediate_group where >= 0).

    Returns one array of channel ids per route, injection and ejection included; the same rules as the
    packet model's hop-by-hop routing.
    """
    src, dst = np.atleast_1d(src), np.atleast_1d(dst)
    ig = np.full(src.size, -1) if intermediate_group is None else np.atleast_1d(intermediate_group).copy()
    k = topo.radix
    r = topo.node_router[src]
    hops = [topo.injection_channel(src)]
    done = np.zeros(src.size, bool)
    for _ in range(8):
        ig = np.where(ig == topo.router_group[r], -1, ig)
        port = next_port(topo, r, dst, ig)
        ch = np.where(done, -1, r * k + port)
        hops.append(ch)
        done |= topo.port_class[port] == TERMINAL
        r = np.where(done, r, topo.channel_dst_router[np.maximum(ch, 0)])
        if done.all():
            break
    H = np.stack(hops, axis=1)
    return [row[row >= 0] for row in H]


def zero_load_latency_ns(topo: Dragonfly, src: int, dst: int, size_bytes: float,
                         config: NetworkConfig | None = None, intermediate_group: int = -1) -> float:
    """Latency of one packet on an empty network: sum over hops of size / bandwidth + latency."""
    net = _NetworkBase(topo, config)
    ch = route_channels(topo, [src], [dst], [intermediate_group])[0]
    return float(np.sum(size_bytes / net.ch_bw[ch] + net.ch_lat[ch]))


def max_min_rates(incidence: sp.csr_matrix, capacity: np.ndarray, demand: np.ndarray | None = None) -> np.ndarray:
    """Max-min fair rates by progressive filling.

    incidence: (channels, flows), the share of each flow crossing each channel (1 for a single path,
    fractions for flows spread over several paths); capacity: per channel; demand: optional cap per flow.
    """
    A = sp.csr_matrix(incidence, dtype=float)
    n_f = A.shape[1]
    rate = np.zeros(n_f)
    frozen = np.zeros(n_f, bool)
    residual = capacity.astype(float).copy()
    demand = np.full(n_f, np.inf) if demand is None else np.asarray(demand, float)
    AT = A.T.tocsr()
    while not frozen.all():
        load = A @ (~frozen).astype(float)
        used = load > 1e-12
        inc_link = np.min(residual[used] / load[used]) if used.any() else np.inf
        inc_demand = np.min(demand[~frozen] - rate[~frozen])
        inc = max(min(inc_link, inc_demand), 0.0)
        if not np.isfinite(inc):
            raise ValueError("a flow crosses no channel and has no demand cap; its rate is unbounded")
        rate[~frozen] += inc
        residual -= inc * load
        saturated = used & (residual <= 1e-9 * np.maximum(capacity, 1.0))
        hit = (AT @ saturated.astype(float)) > 0
        frozen |= hit | (rate >= demand - 1e-12)
    return rate


class FlowNetwork(_NetworkBase):
    """Max-min fair flow model: fast, no buffers, no packet latency beyond the zero-load path latency.

    Active messages share channel bandwidth max-min fairly; rates are recomputed whenever a message
    starts or ends. "minimal" routes minimally; "valiant" spreads inter-group messages evenly over all
    intermediate groups; the adaptive routings ("ugal", "par") are treated as minimal here.
    Busy time and stalls are not modelled (NaN in the counters).
    """

    def __init__(self, topology: Dragonfly, config: NetworkConfig | None = None, **changes):
        super().__init__(topology, config, **changes)
        self._remaining = np.zeros(0)
        self._active = np.zeros(0, np.int64)
        self._paths: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}

    def idle(self) -> bool:
        return self._active.size == 0 and self._pending.size == 0

    def _path(self, m: int):
        if m in self._paths:
            return self._paths[m]
        topo, msgs = self.topo, self.msgs
        s, d = int(msgs["src"][m]), int(msgs["dst"][m])
        sg, dg = topo.node_group(s), topo.node_group(d)
        if self.cfg.routing == "valiant" and sg != dg:
            groups = np.setdiff1d(np.arange(topo.g), [sg, dg])
            routes = route_channels(topo, np.full(groups.size, s), np.full(groups.size, d), groups)
            ch = np.concatenate(routes)
            w = np.full(ch.size, 1.0 / groups.size)
            lat = np.mean([np.sum(self.cfg.packet_bytes / self.ch_bw[c] + self.ch_lat[c]) for c in routes])
        else:
            ch = route_channels(topo, [s], [d])[0]
            w = np.ones(ch.size)
            lat = float(np.sum(self.cfg.packet_bytes / self.ch_bw[ch] + self.ch_lat[ch]))
        # the last packet's store-and-forward latency after the bytes have left the source
        self._paths[m] = (ch, w, lat - self.cfg.packet_bytes / self.ch_bw[ch[0]])
        return self._paths[m]

    def _incidence(self):
        rows, cols, vals = [], [], []
        for j, m in enumerate(self._active):
            ch, w, _ = self._path(int(m))
            rows.append(ch)
            cols.append(np.full(ch.size, j))
            vals.append(w)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                             shape=(self.topo.n_channels, self._active.size))

    def run_until(self, t_ns: float):
        msgs = self.msgs
        while self.now < t_ns - 1e-9:
            ready = msgs["ready"][self._pending] <= self.now + 1e-9
            if ready.any():
                start = self._pending[ready]
                self._active = np.concatenate([self._active, start])
                self._remaining = np.concatenate([self._remaining, msgs["size"][start]])
                self._pending = self._pending[~ready]
            next_ready = msgs["ready"][self._pending].min() if self._pending.size else np.inf
            if self._active.size == 0:
                t_next = min(next_ready, t_ns)
                self._close_windows_until(t_next)
                self.now = t_next
                continue
            A = self._incidence()
            rate = max_min_rates(A, self.ch_bw)
            t_next = min(self.now + np.min(self._remaining / rate), next_ready, t_ns, self._win_end)
            span = t_next - self.now
            self._win["bytes"] += A @ (rate * span)
            self._remaining -= rate * span
            self.now = t_next
            fin = self._remaining <= 1e-6 * np.maximum(msgs["size"][self._active], 1.0)
            for m in self._active[fin]:
                msgs.a["done"][m] = self.now + self._paths[int(m)][2]
                self._paths.pop(int(m))
            self._active, self._remaining = self._active[~fin], self._remaining[~fin]
            self._close_windows_until(self.now)

    def counters(self) -> dict[str, np.ndarray]:
        out = super().counters()
        out["busy"] = np.full_like(out["busy"], np.nan)
        out["stalls"] = np.full_like(out["stalls"], np.nan)
        return out


MODELS = {"packet": PacketNetwork, "flow": FlowNetwork}


def make_network(topology: Dragonfly, fidelity: str = "packet", config: NetworkConfig | None = None, **changes):
    """A network model by name: "packet" (reference) or "flow" (max-min fair, fast)."""
    if fidelity not in MODELS:
        raise ValueError(f"fidelity must be one of {sorted(MODELS)}, got {fidelity!r}")
    return MODELS[fidelity](topology, config, **changes)

"""Bulk-synchronous application skeletons, placement, background traffic and the run driver.

Every job repeats `iterations` times: a compute phase (per rank, mean `compute_us`, lognormal with
coefficient of variation `jitter`), then its communication rounds. A rank starts round r+1 once all
messages it sends in round r are delivered and all it expects in round r have arrived, as blocking MPI
exchanges do; its iteration ends after its last round. A job's iteration runtime is the difference of
the max-over-ranks iteration end times (CODES iteration logs); the first iteration counts from the
job's start.

Skeletons (bytes per message at message_scale = 1):
- "milc":      4D periodic halo, 8 neighbours, 497,664 B each (MFNetSim MILC skeleton).
- "nekbone":   3D periodic stencil with 26 neighbours (faces 64 KiB, edges 4 KiB, corners 256 B) then an
               8 B allreduce (recursive doubling).
- "cosmoflow": 8 MiB allreduce per iteration (Rabenseifner: recursive-halving reduce-scatter,
               recursive-doubling allgather); compute 129 ms as in the Union CosmoFlow skeleton.
- "io":        incast: every rank writes 1 MiB to one of ceil(ranks / 32) aggregator ranks.
- "fft":       all-to-all transpose: every rank sends 8 KiB to every other rank, starting at rank+1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import xarray as xr

from .simulator import NetworkConfig, make_network
from .topology import PORT_CLASS_NAMES, Dragonfly

APPS = ("milc", "nekbone", "cosmoflow", "io", "fft")
PLACEMENTS = ("contiguous", "random")
DEFAULT_COMPUTE_US = {"milc": 500.0, "nekbone": 300.0, "cosmoflow": 129_000.0, "io": 1000.0, "fft": 500.0}


@dataclass(frozen=True)
class Job:
    app: str
    ranks: int
    iterations: int = 10
    compute_us: float | None = None        # None: the app's default (DEFAULT_COMPUTE_US)
    jitter: float = 0.02                   # coefficient of variation of each rank's compute time
    message_scale: float = 1.0
    placement: str = "contiguous"
    start_us: float = 0.0

    def __post_init__(self):
        if self.app not in APPS:
            raise ValueError(f"Job.app must be one of {APPS}, got {self.app!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"Job.placement must be one of {PLACEMENTS}, got {self.placement!r}")
        if not isinstance(self.ranks, (int, np.integer)) or self.ranks < 2:
            raise ValueError(f"Job.ranks must be an integer of at least 2, got {self.ranks!r}")
        if self.iterations < 1:
            raise ValueError(f"Job.iterations must be at least 1, got {self.iterations}")
        for name in ("jitter", "start_us"):
            if not (np.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"Job.{name} must be finite and non-negative, got {getattr(self, name)}")
        if not self.message_scale > 0:
            raise ValueError(f"Job.message_scale must be positive, got {self.message_scale}")
        if self.compute_us is not None and not (np.isfinite(self.compute_us) and self.compute_us >= 0):
            raise ValueError(f"Job.compute_us must be finite and non-negative (or None), got {self.compute_us}")

    @property
    def compute_mean_us(self) -> float:
        return DEFAULT_COMPUTE_US[self.app] if self.compute_us is None else float(self.compute_us)


# -- communication patterns: a list of rounds, each (src_rank, dst_rank, bytes) arrays ----------------
Round = tuple[np.ndarray, np.ndarray, np.ndarray]


def _grid_dims(n: int, d: int) -> list[int]:
    """n split into d factors as equal as possible (largest first), like MPI_Dims_create."""
    dims = [1] * d
    f, m, factors = 2, n, []
    while f * f <= m:
        while m % f == 0:
            factors.append(f)
            m //= f
        f += 1
    if m > 1:
        factors.append(m)
    for f in sorted(factors, reverse=True):
        dims[int(np.argmin(dims))] *= f
    return sorted(dims, reverse=True)


def _halo(P: int, d: int, offsets: np.ndarray, sizes: np.ndarray) -> Round:
    dims = np.array(_grid_dims(P, d))
    coords = np.stack(np.unravel_index(np.arange(P), dims), axis=1)
    src, dst, size = [], [], []
    for off, b in zip(offsets, sizes):
        nb = np.ravel_multi_index(tuple(((coords + off) % dims).T), dims)
        keep = nb != np.arange(P)
        src.append(np.arange(P)[keep]), dst.append(nb[keep]), size.append(np.full(keep.sum(), b))
    return np.concatenate(src), np.concatenate(dst), np.concatenate(size).astype(float)


def _allreduce_doubling(P: int, nbytes: float) -> list[Round]:
    P2 = 1 << (P.bit_length() - 1)
    extra = np.arange(P - P2)
    rounds = []
    if extra.size:
        rounds.append((P2 + extra, extra, np.full(extra.size, nbytes)))
    s = 1
    while s < P2:
        r = np.arange(P2)
        rounds.append((r, r ^ s, np.full(P2, nbytes)))
        s *= 2
    if extra.size:
        rounds.append((extra, P2 + extra, np.full(extra.size, nbytes)))
    return rounds


def _allreduce_rabenseifner(P: int, nbytes: float) -> list[Round]:
    P2 = 1 << (P.bit_length() - 1)
    extra = np.arange(P - P2)
    r = np.arange(P2)
    halving = []
    s, part = P2 // 2, nbytes / 2
    while s >= 1:
        halving.append((r, r ^ s, np.full(P2, max(part, 8.0))))
        s, part = s // 2, part / 2
    rounds = [(P2 + extra, extra, np.full(extra.size, nbytes))] if extra.size else []
    rounds += halving + halving[::-1]
    if extra.size:
        rounds.append((extra, P2 + extra, np.full(extra.size, nbytes)))
    return rounds


def app_rounds(app: str, ranks: int, message_scale: float = 1.0) -> list[Round]:
    """One iteration's communication rounds of a skeleton."""
    if app not in APPS:
        raise ValueError(f"app must be one of {APPS}, got {app!r}")
    P, sc = int(ranks), float(message_scale)
    if app == "milc":
        eye = np.eye(4, dtype=int)
        offs = np.concatenate([eye, -eye])
        return [_halo(P, 4, offs, np.full(8, 497_664 * sc))]
    if app == "nekbone":
        offs = np.array([(i, j, k) for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1)
                         if (i, j, k) != (0, 0, 0)])
        nz = np.abs(offs).sum(axis=1)              # 1 face, 2 edge, 3 corner
        sizes = np.choose(nz - 1, [65_536 * sc, 4_096 * sc, 256 * sc])
        return [_halo(P, 3, offs, sizes)] + _allreduce_doubling(P, 8.0)
    if app == "cosmoflow":
        return _allreduce_rabenseifner(P, 8 * 2**20 * sc)
    if app == "io":
        n_agg = int(np.ceil(P / 32))
        src = np.arange(n_agg, P)
        return [(src, src % n_agg, np.full(src.size, 2**20 * sc))]
    # fft: all-to-all, rank i sends to i+1, i+2, ... in that order
    shift = np.arange(1, P)
    src = np.repeat(np.arange(P), P - 1)
    dst = (src + np.tile(shift, P)) % P
    return [(src, dst, np.full(src.size, 8_192 * sc))]


def place_jobs(topology: Dragonfly, jobs: list[Job], seed: int = 0) -> list[np.ndarray]:
    """Node ids of every job's ranks: contiguous jobs take the lowest free nodes, random ones a random sample."""
    rng = np.random.default_rng(seed)
    free = np.ones(topology.n_nodes, bool)
    total = sum(j.ranks for j in jobs)
    if total > topology.n_nodes:
        raise ValueError(f"the jobs need {total} ranks (one per node) but {topology!r} has {topology.n_nodes} nodes")
    out = []
    for j in sorted(range(len(jobs)), key=lambda i: jobs[i].placement != "contiguous"):
        avail = np.flatnonzero(free)
        nodes = avail[: jobs[j].ranks] if jobs[j].placement == "contiguous" else \
            rng.choice(avail, jobs[j].ranks, replace=False)
        free[nodes] = False
        out.append((j, nodes))
    return [nodes for _, nodes in sorted(out)]


@dataclass(frozen=True)
class Background:
    """Uniform random traffic: every node in `nodes` (None: nodes no job uses) sends Poisson messages."""

    load_gib_s: float = 1.0      # offered load per node
    message_bytes: int = 4096
    nodes: tuple | None = None

    def __post_init__(self):
        if not (np.isfinite(self.load_gib_s) and self.load_gib_s >= 0):
            raise ValueError(f"Background.load_gib_s must be finite and non-negative, got {self.load_gib_s}")
        if self.message_bytes < 1:
            raise ValueError(f"Background.message_bytes must be at least 1, got {self.message_bytes}")


class _JobState:
    """Rank state machine of one job, vectorised over ranks."""

    def __init__(self, job: Job, nodes: np.ndarray, rng: np.random.Generator):
        self.job, self.nodes, self.rng = job, nodes, rng
        self.rounds = app_rounds(job.app, job.ranks, job.message_scale)
        P, R, It = job.ranks, len(self.rounds), job.iterations
        self.R = R
        self.n_send = np.stack([np.bincount(s, minlength=P) for s, _, _ in self.rounds], axis=1)
        self.n_recv = np.stack([np.bincount(d, minlength=P) for _, d, _ in self.rounds], axis=1)
        self.sends_done = np.zeros((P, It * R), np.int64)
        self.recvs_done = np.zeros((P, It * R), np.int64)
        self.t_last = np.full((P, It * R), -np.inf)
        self.cur = np.full(P, -1)                   # global round index; -1 computing
        self.iteration = np.zeros(P, np.int64)
        self.t_round_start = np.zeros(P)
        self.compute_end = job.start_us * 1e3 + self._compute(np.arange(P))
        self.iter_end = np.full((P, It), np.nan)
        self.finished = np.zeros(P, bool)

    def _compute(self, ranks) -> np.ndarray:
        mean, cv = self.job.compute_mean_us * 1e3, self.job.jitter
        if cv == 0:
            return np.full(len(ranks), mean)
        s2 = np.log1p(cv**2)
        return mean * self.rng.lognormal(-s2 / 2, np.sqrt(s2), len(ranks))

    def next_event_ns(self) -> float:
        computing = (self.cur < 0) & ~self.finished
        return float(self.compute_end[computing].min()) if computing.any() else np.inf

    def advance(self, now: float, submit) -> None:
        """Move every rank as far as it can go at time `now`; `submit(src_rank, dst_rank, bytes, t, round)`."""
        while True:
            moved = False
            start = (self.cur < 0) & ~self.finished & (self.compute_end <= now)
            if start.any():
                r = np.flatnonzero(start)
                self._enter(r, self.iteration[r] * self.R, self.compute_end[r], submit)
                moved = True
            act = np.flatnonzero(self.cur >= 0)
            if act.size:
                c = self.cur[act]
                rr = c % self.R
                done = ((self.sends_done[act, c] >= self.n_send[act, rr])
                        & (self.recvs_done[act, c] >= self.n_recv[act, rr]))
                if done.any():
                    r, c, rr = act[done], c[done], rr[done]
                    t = np.maximum(self.t_round_start[r], self.t_last[r, c])
                    last = rr == self.R - 1
                    if (~last).any():
                        self._enter(r[~last], c[~last] + 1, t[~last], submit)
                    if last.any():
                        rl, tl = r[last], t[last]
                        self.iter_end[rl, self.iteration[rl]] = tl
                        self.iteration[rl] += 1
                        self.cur[rl] = -1
                        fin = self.iteration[rl] >= self.job.iterations
                        self.finished[rl[fin]] = True
                        nxt = rl[~fin]
                        self.compute_end[nxt] = tl[~fin] + self._compute(nxt)
                    moved = True
            if not moved:
                return

    def _enter(self, ranks, cur, t, submit):
        """Put `ranks` (sorted) into global round `cur` at time `t` and send their messages of it."""
        cur = np.broadcast_to(cur, ranks.shape)
        t = np.broadcast_to(t, ranks.shape)
        self.cur[ranks] = cur
        self.t_round_start[ranks] = t
        rnd = cur % self.R
        for r_idx in np.unique(rnd):
            here = rnd == r_idx
            who = ranks[here]
            s, d, b = self.rounds[r_idx]
            sel = np.isin(s, who)
            if sel.any():
                pos = np.searchsorted(who, s[sel])
                submit(s[sel], d[sel], b[sel], t[here][pos], cur[here][pos])

    def on_done(self, src, dst, rnd, t):
        np.add.at(self.sends_done, (src, rnd), 1)
        np.add.at(self.recvs_done, (dst, rnd), 1)
        np.maximum.at(self.t_last, (src, rnd), t)
        np.maximum.at(self.t_last, (dst, rnd), t)

    def runtimes_ns(self) -> np.ndarray:
        ends = np.max(self.iter_end, axis=0)            # NaN while any rank has not finished
        prev = np.r_[self.job.start_us * 1e3, ends[:-1]]
        return ends - prev


def run_workloads(topology: Dragonfly, jobs: list[Job], *, background: Background | None = None,
                  fidelity: str = "packet", config: NetworkConfig | None = None, seed: int = 0,
                  jitter_seed: int | None = None, max_time_us: float = 1e6, stop_after_job: int | None = None,
                  **config_changes) -> xr.Dataset:
    """Run jobs (and optional background traffic) on a network model; port counters and runtimes as xarray.

    `seed` drives placement, routing choices and background traffic; `jitter_seed` (default: `seed`) only
    the compute-time noise, so a scenario can be re-run with other jitter and everything else equal.
    `stop_after_job`: end the run when that job has finished (the others keep their partial runtimes, NaN).
    """
    if not jobs:
        raise ValueError("jobs must list at least one Job")
    net = make_network(topology, fidelity, config, **({"seed": seed} | config_changes))
    cfg = net.cfg
    rng = np.random.default_rng(seed)
    placements = place_jobs(topology, jobs, seed)
    jseed = seed if jitter_seed is None else jitter_seed
    states = [_JobState(j, nodes, np.random.default_rng([jseed, i]))
              for i, (j, nodes) in enumerate(zip(jobs, placements))]
    msg_job, msg_src, msg_dst, msg_round = [], [], [], []       # per message id, in submission order

    def submitter(ji):
        st = states[ji]

        def submit(s, d, b, t, rnd):
            net.submit(st.nodes[s], st.nodes[d], b, t)
            msg_job.append(np.full(s.size, ji)), msg_src.append(s), msg_dst.append(d), msg_round.append(rnd)
        return submit

    submits = [submitter(i) for i in range(len(states))]
    bg_nodes = None
    if background is not None and background.load_gib_s > 0:
        used = np.concatenate(placements)
        bg_nodes = np.asarray(background.nodes) if background.nodes is not None else \
            np.setdiff1d(np.arange(topology.n_nodes), used)
        if bg_nodes.size < 1:
            bg_nodes = None
    bg_until = 0.0
    bg_chunk = 10_000.0
    outstanding = np.zeros(0, np.int64)
    lookup = {name: np.zeros(0, np.int64) for name in ("job", "src", "dst", "round")}
    horizon = max_time_us * 1e3
    poll = cfg.dt_ns if fidelity == "packet" else 1_000.0

    def refresh():
        if msg_job:
            for name, parts in (("job", msg_job), ("src", msg_src), ("dst", msg_dst), ("round", msg_round)):
                lookup[name] = np.concatenate([lookup[name]] + parts)
                parts.clear()

    def finished() -> bool:
        if stop_after_job is not None and states[stop_after_job].finished.all():
            return True
        return all(st.finished.all() for st in states)

    now = 0.0
    while now < horizon and not finished():
        for ji, st in enumerate(states):
            n_before = net.msgs.n
            st.advance(now, submits[ji])
            outstanding = np.concatenate([outstanding, np.arange(n_before, net.msgs.n)])
        refresh()
        if finished():
            break
        if bg_nodes is not None and bg_until <= now + poll:
            rate = background.load_gib_s * 2**30 / 1e9 / background.message_bytes   # messages per ns per node
            n = rng.poisson(rate * bg_chunk, bg_nodes.size)
            src = np.repeat(bg_nodes, n)
            t = bg_until + rng.uniform(0, bg_chunk, src.size)
            dst = rng.integers(0, topology.n_nodes - 1, src.size)
            dst += dst >= src
            if src.size:
                net.submit(src, dst, background.message_bytes, t)
                new = {"job": np.full(src.size, -1), "src": src, "dst": dst, "round": np.zeros(src.size, np.int64)}
                for name, v in new.items():
                    lookup[name] = np.concatenate([lookup[name], v])
            bg_until += bg_chunk
        nxt = now + poll
        if net.idle() and bg_nodes is None:
            nxt = max(nxt, min([st.next_event_ns() for st in states] + [horizon]))
        net.run_until(nxt)
        now = net.now
        if outstanding.size:
            done_t = net.message_done_ns[outstanding]
            fin = np.isfinite(done_t)
            if fin.any():
                ids = outstanding[fin]
                jb = lookup["job"][ids]
                for ji in np.unique(jb):
                    k = jb == ji
                    states[ji].on_done(lookup["src"][ids[k]], lookup["dst"][ids[k]], lookup["round"][ids[k]],
                                       done_t[fin][k])
                outstanding = outstanding[~fin]
    net.run_until(np.ceil(now / cfg.window_ns) * cfg.window_ns)   # close the last window
    return _to_dataset(topology, net, jobs, states, placements, fidelity, seed)


def _to_dataset(topo, net, jobs, states, placements, fidelity, seed) -> xr.Dataset:
    c = net.counters()
    n_it = max(j.iterations for j in jobs)
    rt = np.full((len(jobs), n_it), np.nan)
    for i, st in enumerate(states):
        rt[i, : st.job.iterations] = st.runtimes_ns() / 1e3
    ends = np.full((len(jobs), n_it), np.nan)
    for i, st in enumerate(states):
        ends[i, : st.job.iterations] = np.max(st.iter_end, axis=0) / 1e3
    port_attrs = lambda u, ln: {"units": u, "long_name": ln}  # noqa: E731
    wrp = ("window", "router", "port")
    ds = xr.Dataset(
        {
            "port_bytes": (wrp, c["bytes"], port_attrs("bytes", "bytes sent by the router output port in the window")),
            "port_busy_time": (wrp, c["busy"] / 1e3, port_attrs(
                "us", "time the port's downstream buffer was full (a packet waited for credits)")),
            "port_stalls": (wrp, c["stalls"], port_attrs("1", "packets newly blocked for lack of credits")),
            "iteration_runtime": (("job", "iteration"), rt, port_attrs(
                "us", "iteration runtime (max over ranks of the end time, differenced)")),
            "iteration_end": (("job", "iteration"), ends, port_attrs("us", "iteration end time, max over ranks")),
            "job_app": (("job",), np.array([j.app for j in jobs]), port_attrs("1", "application skeleton")),
            "job_ranks": (("job",), np.array([j.ranks for j in jobs]),
                          port_attrs("1", "number of ranks (one per node)")),
            "job_placement": (("job",), np.array([j.placement for j in jobs]), port_attrs("1", "node placement")),
            "job_start": (("job",), np.array([j.start_us for j in jobs]), port_attrs("us", "job arrival time")),
            "job_node_router": (("job", "rank"), _pad([topo.node_router[p] for p in placements]),
                                port_attrs("1", "router of each rank's node (-1: no such rank)")),
        },
        coords={
            "window_end": (("window",), c["end_ns"] / 1e3, port_attrs("us", "end time of the counting window")),
            "router": (("router",), np.arange(topo.n_routers), port_attrs("1", "router id (group * a + local id)")),
            "port": (("port",), np.arange(topo.radix), port_attrs("1", "router port (local, global, terminal order)")),
            "port_class": (("port",), np.array(PORT_CLASS_NAMES)[topo.port_class], port_attrs("1", "port class")),
            "router_group": (("router",), topo.router_group, port_attrs("1", "group of the router")),
            "job": (("job",), np.arange(len(jobs)), port_attrs("1", "job index")),
            "iteration": (("iteration",), np.arange(n_it), port_attrs("1", "iteration index")),
        },
        attrs={"title": "Dragonfly workload run", "Conventions": "CF-1.10", "a": topo.a, "p": topo.p, "h": topo.h,
               "g": topo.g, "fidelity": fidelity, "routing": net.cfg.routing, "dt_ns": net.cfg.dt_ns,
               "window_us": net.cfg.window_ns / 1e3, "seed": seed, "packet_bytes": net.cfg.packet_bytes},
    )
    return ds


def _pad(rows: list[np.ndarray]) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), -1, np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out

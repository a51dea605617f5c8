"""Hybrid simulation: packet-level warm-up, then the target job fast-forwarded by the forecaster.

Modelled on the CODES application-surrogate director. The target job (job 0) and its co-runners run
on the packet model until the target has `warmup` iterations. At each later target iteration end the
forecaster is asked for the next runtime; if its relative 80% interval width (high - low) / median is
below `width_threshold`, the target is fast-forwarded: its iterations end at the forecast times (its
network traffic is not simulated), and the co-runners advance on the max-min flow model at the level of
communication rounds (`RoundFlowModel`: one max-min solve per round of a job, cached, so an iteration
costs compute + the sum of its round times). Fast-forward stops when the interval gets wider than the
threshold, when the co-runners' offered load (bytes per µs of the running co-runners, from the round
model) drifts from its value at the switch by more than `drift_threshold` (relative; a co-runner
arriving or finishing), or after `max_surrogate` iterations; then everything returns to the packet model,
each co-runner from the start of its next iteration, for at least `recheck` iterations (re-feeding the
forecaster with true runtimes and counters, and tuning it online on them at the next switch). Packets in
flight at a switch finish in the packet model. The all-packet reference is the same driver without a
forecaster.

The first `settle` iterations after a return are simulated and counted but not shown to the forecaster
(neither as input nor for online tuning): every co-runner restarts at the same moment, so they run
slower than the steady state (10-20% on the 72-node benchmark scenario), and a forecaster fed with them
carries that transient over the whole next stretch. Online tuning uses windows of consecutive simulated
iterations only.
"""
from __future__ import annotations

import time

import numpy as np

from .features import iteration_rates, job_share, node_features
from .scenarios import Scenario
from .simulator import NetworkConfig, PacketNetwork, _NetworkBase, max_min_rates, route_channels
from .workloads import _JobState, place_jobs


def hybrid_scenario(hy, sim) -> Scenario:
    """The hybrid benchmark scenario of a case's `evaluate.hybrid` and `simulator` sections (no background)."""
    n = len(hy.corunners)
    est = hy.iterations * 250.0
    return Scenario(preset=hy.preset, target=hy.target, target_placement="random", corunners=tuple(hy.corunners),
                    corunner_placements=("random",) * n,
                    corunner_starts_us=tuple(round(0.3 * est * i, 1) for i in range(n)),
                    corunner_iterations=tuple(max(2, hy.iterations // 2) for _ in range(n)),
                    background_gib_s=0.0, iterations=hy.iterations, placement_seed=hy.seed,
                    jitter_seed=hy.seed + 1, jitter=sim.jitter, routing=sim.routing, split="hybrid")


class _Carrier:
    """A network plus which job, ranks and round each of its messages belongs to."""

    def __init__(self, net):
        self.net = net
        self.parts: list[tuple] = []
        self.job = self.src = self.dst = self.rnd = np.zeros(0, np.int64)
        self.outstanding = np.zeros(0, np.int64)

    def submit(self, ji, nodes, s, d, b, t, rnd):
        ids = self.net.submit(nodes[s], nodes[d], b, t)
        self.parts.append((np.full(s.size, ji), s, d, rnd))
        self.outstanding = np.concatenate([self.outstanding, ids])

    def collect(self, states):
        if self.parts:
            cols = list(zip(*self.parts))
            self.job, self.src, self.dst, self.rnd = (np.concatenate([old, *new]) for old, new in
                                                      zip((self.job, self.src, self.dst, self.rnd), cols))
            self.parts.clear()
        if not self.outstanding.size:
            return
        done = self.net.message_done_ns[self.outstanding]
        fin = np.isfinite(done)
        if fin.any():
            ids = self.outstanding[fin]
            for ji in np.unique(self.job[ids]):
                k = self.job[ids] == ji
                states[ji].on_done(self.src[ids[k]], self.dst[ids[k]], self.rnd[ids[k]], done[fin][k])
            self.outstanding = self.outstanding[~fin]

    def busy(self) -> bool:
        return not self.net.idle()


def _packet_rates(net: PacketNetwork, start_ns: float, end_ns: float) -> np.ndarray:
    """Counter rates (router, port, 3) of the packet model over [start, end] from its closed windows."""
    topo, w = net.topo, net.cfg.window_ns
    ends = np.array(net.windows["end_ns"])
    sel = np.flatnonzero((ends > start_ns) & (ends - w < end_ns))
    R, k = topo.n_routers, topo.radix
    if not sel.size:
        return np.zeros((R, k, 3))
    get = lambda name, scale: np.stack([net.windows[name][i][: R * k] for i in sel]).reshape(-1, R, k) * scale  # noqa
    r = iteration_rates(ends[sel] / 1e3, w / 1e3, get("bytes", 1.0), get("busy", 1e-3), get("stalls", 1.0),
                        [start_ns / 1e3], [end_ns / 1e3])
    return r[0]


def run_hybrid(sc: Scenario, model=None, *, window_us: float = 20.0, dt_ns: float = 500.0, steps: int = 6,
               width_threshold: float = 0.2, drift_threshold: float = 0.3, warmup: int = 8, recheck: int = 2,
               max_surrogate: int = 20, tune_steps: int = 3, tune_lr: float = 1e-3, settle: int = 1) -> dict:
    """Run a scenario until its target job ends, all packet-level (model None) or hybrid; see the module doc."""
    from .methods import Samples

    wall0 = time.perf_counter()
    topo = sc.topology()
    jobs = sc.jobs(topo.n_nodes)
    placements = place_jobs(topo, jobs, sc.placement_seed)
    states = [_JobState(j, nodes, np.random.default_rng([sc.jitter_seed, i]))
              for i, (j, nodes) in enumerate(zip(jobs, placements))]
    target = states[0]
    cfg = {"routing": sc.routing, "window_ns": window_us * 1e3, "dt_ns": dt_ns, "seed": sc.placement_seed}
    packet = _Carrier(PacketNetwork(topo, **cfg))
    carriers = [packet]
    rounds = RoundFlowModel(topo, NetworkConfig(**cfg)) if model is not None else None
    share = job_share(topo, topo.node_router[placements[0]])
    job_routers = topo.node_router[placements[0]]

    def submitter(carrier, ji):
        def submit(s, d, b, t, rnd):
            carrier.submit(ji, states[ji].nodes, s, d, b, t, rnd)
        return submit

    now = 0.0

    def step(active, carrier, until=np.inf):
        """Advance the active jobs and every busy network by one poll (or jump over idle time)."""
        nonlocal now
        for ji in active:
            states[ji].advance(now, submitter(carrier, ji))
        nxt = min(now + dt_ns, until)
        if not any(c.busy() for c in carriers):
            jump = min([states[ji].next_event_ns() for ji in active] + [until])
            if np.isfinite(jump):
                nxt = max(nxt, jump)
        for c in carriers:
            if c.busy() or c is carrier:
                c.net.run_until(nxt)
        now = max(nxt, packet.net.now if carrier is packet else nxt)
        for c in carriers:
            c.collect(states)

    runtimes: list[float] = []        # per target iteration, simulated or forecast
    forecasts: list[tuple] = []       # (iteration, median, low80, high80) of every forecast asked for
    counters: list = []               # per iteration: rates (router, port, 3) when simulated, else None
    usable: list[bool] = []           # simulated and not one of the `settle` iterations after a return
    ends: list[float] = []
    start_ns = target.job.start_us * 1e3
    surrogate_ns, switches, last_resume, last_tune, last_attempt = 0.0, 0, -10**9, -10**9, -1
    everyone = list(range(len(states)))
    corunners = everyone[1:]
    while not target.finished.all():
        step(everyone, packet)
        done = int(target.iteration.min())
        while len(runtimes) < done:
            i = len(runtimes)
            end = float(np.max(target.iter_end[:, i]))
            begin = ends[-1] if ends else start_ns
            ends.append(end)
            runtimes.append((end - begin) / 1e3)
            counters.append(_packet_rates(packet.net, begin, end))
            usable.append(i - last_resume >= settle)
        n = len(runtimes)
        if model is None or target.finished.all() or n < max(warmup, steps + 1) or n - last_resume < recheck \
                or n != done or n == last_attempt:
            continue
        last_attempt = n                            # one decision per simulated target iteration
        # -- try to fast-forward from the end of iteration n - 1
        inputs = [c if u else None for c, u in zip(counters, usable)]
        if tune_steps and n - last_tune >= recheck:
            model.tune(_recent_samples(Samples, sc.preset, inputs, runtimes, steps, topo, share), tune_steps,
                       tune_lr)
            last_tune = n
        t0 = ends[-1]
        co, ref_load = None, 0.0
        # inputs: the last simulated iterations only; forecasts are not fed back (no compounding drift), so one
        # forecast serves the whole stretch
        simulated = [i for i, c in enumerate(inputs) if c is not None][-steps:]
        f = model.forecast(np.stack([counters[i] for i in simulated]), np.array([runtimes[i] for i in simulated]),
                           job_routers, topology=topo)
        forecasts.append((n, f.runtime_us, f.low80, f.high80))
        forecast_ns, entered = 0.0, False
        while len(runtimes) < target.job.iterations and len(runtimes) - n < max_surrogate:
            if (f.high80 - f.low80) / f.runtime_us > width_threshold:
                break
            if not entered:
                drain_until = now + 1e6                     # packets in flight finish in the packet model first
                while packet.busy() and now < drain_until:
                    packet.net.run_until(now + dt_ns)
                    now = packet.net.now
                    packet.collect(states)
                co = [_FastForward(states[ji], rounds, max(t0, now)) for ji in corunners]
                ref_load = sum(c.load(t0) for c in co)
            entered = True
            t1 = t0 + f.runtime_us * 1e3
            runtimes.append(f.runtime_us)
            counters.append(None)
            usable.append(False)
            ends.append(t1)
            forecast_ns += t1 - t0
            t0 = t1
            load = sum(c.load(t1) for c in co)
            if abs(load - ref_load) > drift_threshold * max(ref_load, 1e-12):
                break
        if not entered:
            continue
        switches += 1
        surrogate_ns += forecast_ns
        j = len(runtimes)
        last_resume = j
        target.iter_end[:, :j] = np.array(ends)[None, :j]
        if j >= target.job.iterations:
            target.iteration[:] = j
            target.finished[:] = True
            break
        now = max(now, t0)
        for c in co:
            c.hand_back(now)
        _resume(target, j, t0)
    total_ns = ends[-1] - start_ns
    return {"wall_s": time.perf_counter() - wall0, "target_runtime_us": total_ns / 1e3, "forecasts": forecasts,
            "surrogate_fraction": surrogate_ns / total_ns if total_ns > 0 else 0.0, "switches": switches,
            "runtimes_us": np.array(runtimes), "simulated": np.array([c is not None for c in counters])}


class RoundFlowModel:
    """Co-runner iterations on the max-min flow model, one solve per communication round (cached per job).

    A round's time is the longest of its messages at their max-min fair rates (minimal routes, the job's
    own traffic only) plus that message's zero-load latency of one packet; an iteration takes the longest
    rank's compute time plus the sum of its round times.
    """

    def __init__(self, topo, config: NetworkConfig):
        self.topo = topo
        self.net = _NetworkBase(topo, config)
        self._comm: dict[int, tuple[float, float]] = {}

    def comm(self, st: _JobState) -> tuple[float, float]:
        """(communication ns per iteration, bytes per iteration) of a job."""
        key = id(st)
        if key not in self._comm:
            import scipy.sparse as sp

            total, nbytes = 0.0, 0.0
            bw, lat, pkt = self.net.ch_bw, self.net.ch_lat, self.net.cfg.packet_bytes
            for s, d, b in st.rounds:
                if not s.size:
                    continue
                routes = route_channels(self.topo, st.nodes[s], st.nodes[d])
                rows = np.concatenate(routes)
                cols = np.repeat(np.arange(len(routes)), [len(r) for r in routes])
                A = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(self.topo.n_channels, len(routes)))
                rate = max_min_rates(A, bw)
                first = np.array([pkt / bw[r].min() + lat[r].sum() for r in routes])
                total += float(np.max(b / rate + first))
                nbytes += float(b.sum())
            self._comm[key] = (total, nbytes)
        return self._comm[key]


class _FastForward:
    """One co-runner advanced iteration by iteration on the round model while the target is fast-forwarded."""

    def __init__(self, st: _JobState, model: RoundFlowModel, t_ns: float):
        self.st, self.model = st, model
        self.comm_ns, self.bytes = model.comm(st)
        self.start = st.job.start_us * 1e3
        its = st.job.iterations
        if st.finished.all():
            self.k, self.end = its, -np.inf
            return
        self.k = int(st.iteration.min())                          # iteration in progress
        begin = float(np.max(st.iter_end[:, self.k - 1])) if self.k else self.start
        self.end = max(t_ns, begin + self._duration()) if begin <= t_ns else begin + self._duration()

    def _duration(self) -> float:
        return float(np.max(self.st._compute(np.arange(self.st.job.ranks)))) + self.comm_ns

    def _advance(self, t_ns: float) -> None:
        its = self.st.job.iterations
        while self.k < its and self.end <= t_ns:
            self.st.iter_end[:, self.k] = self.end
            self.k += 1
            if self.k < its:
                self.end += self._duration()

    def load(self, t_ns: float) -> float:
        """Offered bytes per ns while running at t_ns (0 before its start and after its end)."""
        self._advance(t_ns)
        running = self.k < self.st.job.iterations and t_ns >= self.start
        return self.bytes / (self.comm_ns + self.st.job.compute_mean_us * 1e3) if running else 0.0

    def hand_back(self, t_ns: float) -> None:
        """Back to the packet model: the iteration in progress ends as forecast, the next one is simulated."""
        self._advance(t_ns)
        its = self.st.job.iterations
        if self.k >= its:
            self.st.iteration[:] = its
            self.st.finished[:] = True
            self.st.cur[:] = -1
        elif self.start <= t_ns or self.k > 0:
            self.st.iter_end[:, self.k] = self.end
            if self.k + 1 >= its:
                self.st.iteration[:] = its
                self.st.finished[:] = True
                self.st.cur[:] = -1
            else:
                _resume(self.st, self.k + 1, self.end)


def _resume(st: _JobState, iteration: int, t_ns: float) -> None:
    """Put every rank of a job at the start of `iteration` (its compute phase) at time t_ns."""
    P = st.job.ranks
    st.iteration[:] = iteration
    st.cur[:] = -1
    st.finished[:] = False
    st.compute_end[:] = t_ns + st._compute(np.arange(P))


def _recent_samples(Samples, preset, counters, runtimes, steps, topo, share, keep: int = 8):
    """Samples from the last fully simulated stretches: a window of `steps` simulated iterations and the next
    (iterations without counters, fast-forwarded or settling, break a window)."""
    xs, rts, ys = [], [], []
    for i in range(len(runtimes) - 1, steps - 1, -1):
        win = counters[i - steps: i]
        if i - steps < 1 or any(c is None for c in win) or counters[i] is None:
            continue
        xs.append(node_features(np.stack(win), topo, share))
        rts.append(runtimes[i - steps: i])
        ys.append(runtimes[i])
        if len(ys) >= keep:
            break
    if not ys:
        return Samples(preset, np.zeros((0, steps, topo.n_routers, 16), np.float32), np.zeros((0, steps)),
                       np.zeros(0), [], np.zeros(0, int), np.zeros(0, int))
    return Samples(preset, np.stack(xs), np.array(rts), np.array(ys), [np.array(r) for r in rts],
                   np.zeros(len(ys), int), np.zeros(len(ys), int))

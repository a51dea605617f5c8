"""Balanced 1D Dragonfly with the wiring of CODES dragonfly-dally.

a routers per group (all-to-all inside a group), p terminals per router, h global links per router,
g = a*h + 1 groups, so every pair of groups is joined by exactly one global link. Router radix
k = (a - 1) + h + p; ports are numbered as CODES numbers them: local first, then global, then terminal.

Global wiring (CODES `scripts/dragonfly-dally/dragonfly-dally-topo-gen.py`): the l-th global link of
group gi leaves router l // h of that group and goes to group others[l], where others lists the other
groups starting after gi (with wrap-around), and lands on router a - 1 - (l // h) of that group. The
resulting directed links come in reverse pairs, so every global port has a partner port.

Everything is a numpy array indexed by router, port, node or channel. A channel is one direction of
one link: channel r*k + port is router r's output port, and channel n_routers*k + n is node n's
injection link into its router.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

LOCAL, GLOBAL, TERMINAL = 0, 1, 2
PORT_CLASS_NAMES = ("local", "global", "terminal")

# name -> (a, p, h): balanced, a = 2p = 2h
PRESETS = {
    "df72": (4, 2, 2),
    "df342": (6, 3, 3),
    "df1056": (8, 4, 4),
}


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (at least 1), got {value!r}")
    return int(value)


@dataclass(frozen=True, eq=False)
class Dragonfly:
    """A 1D Dragonfly. Build with `Dragonfly(a, p, h)` or `Dragonfly.preset("df1056")`."""

    a: int
    p: int
    h: int
    g: int = field(init=False)
    radix: int = field(init=False)
    n_routers: int = field(init=False)
    n_nodes: int = field(init=False)

    def __post_init__(self):
        a = _check_positive_int("a (routers per group)", self.a)
        p = _check_positive_int("p (terminals per router)", self.p)
        h = _check_positive_int("h (global links per router)", self.h)
        if a < 2:
            raise ValueError(f"a (routers per group) must be at least 2 for a group to have local links, got {a}")
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("g", a * h + 1)
        set_("radix", (a - 1) + h + p)
        set_("n_routers", a * self.g)
        set_("n_nodes", a * p * self.g)
        self._build()

    @classmethod
    def preset(cls, name: str) -> "Dragonfly":
        if name not in PRESETS:
            raise ValueError(f"unknown Dragonfly preset {name!r}; allowed: {sorted(PRESETS)}")
        return cls(*PRESETS[name])

    # -- construction -------------------------------------------------------------------------
    def _build(self):
        a, p, h, g, k, R, N = self.a, self.p, self.h, self.g, self.radix, self.n_routers, self.n_nodes
        set_ = lambda name, v: object.__setattr__(self, name, v)  # noqa: E731

        port_class = np.empty(k, dtype=np.int8)
        port_class[: a - 1] = LOCAL
        port_class[a - 1: a - 1 + h] = GLOBAL
        port_class[a - 1 + h:] = TERMINAL

        # local_port[i, j]: port of local router i that leads to local router j (same in every group)
        i, j = np.meshgrid(np.arange(a), np.arange(a), indexing="ij")
        local_port = np.where(j < i, j, j - 1)
        local_port[i == j] = -1

        peer_router = np.full((R, k), -1, dtype=np.int64)
        peer_node = np.full((R, k), -1, dtype=np.int64)
        routers = np.arange(R)
        grp, loc = routers // a, routers % a
        for dst_local in range(a):
            ports = local_port[loc, dst_local]
            ok = ports >= 0
            peer_router[routers[ok], ports[ok]] = grp[ok] * a + dst_local

        # CODES dally global wiring, vectorised over (group, link)
        gi, link = np.meshgrid(np.arange(g), np.arange(a * h), indexing="ij")
        pos = (link % (g - 1) + gi) % (g - 1)           # index into the other groups, rolled by -gi
        dst_group = np.where(pos < gi, pos, pos + 1)
        src_local = (link // h) % a
        src_router = gi * a + src_local
        dst_router = dst_group * a + (a - 1 - src_local)
        gport = (a - 1) + link % h
        peer_router[src_router, gport] = dst_router

        gateway_router = np.full((g, g), -1, dtype=np.int64)
        gateway_port = np.full((g, g), -1, dtype=np.int64)
        gateway_router[gi, dst_group] = src_router
        gateway_port[gi, dst_group] = gport

        tport = np.arange(a - 1 + h, k)
        peer_node[:, tport] = routers[:, None] * p + (tport - (a - 1 + h))[None, :]

        # channels: router output ports, then node injection links
        n_ch = R * k + N
        ch_class = np.concatenate([np.tile(port_class, R), np.full(N, TERMINAL, np.int8)])
        ch_src_router = np.concatenate([np.repeat(routers, k), np.full(N, -1)])
        ch_dst_router = np.concatenate([peer_router.ravel(), np.arange(N) // p])
        ch_dst_node = np.concatenate([peer_node.ravel(), np.full(N, -1)])

        set_("port_class", port_class)
        set_("local_port", local_port)
        set_("port_peer_router", peer_router)
        set_("port_peer_node", peer_node)
        set_("gateway_router", gateway_router)
        set_("gateway_port", gateway_port)
        set_("router_group", grp)
        set_("router_local", loc)
        set_("node_router", np.arange(N) // p)
        set_("node_port", (a - 1 + h) + np.arange(N) % p)
        set_("n_channels", n_ch)
        set_("channel_class", ch_class)
        set_("channel_src_router", ch_src_router)
        set_("channel_dst_router", ch_dst_router)
        set_("channel_dst_node", ch_dst_node)
        for arr in (port_class, local_port, peer_router, peer_node, gateway_router, gateway_port,
                    ch_class, ch_src_router, ch_dst_router, ch_dst_node):
            arr.setflags(write=False)

    # -- helpers -----------------------------------------------------------------------------
    def injection_channel(self, node):
        return self.n_routers * self.radix + np.asarray(node)

    def ejection_channel(self, node):
        node = np.asarray(node)
        return self.node_router[node] * self.radix + self.node_port[node]

    def node_group(self, node):
        return self.router_group[self.node_router[np.asarray(node)]]

    def router_links(self) -> dict[str, np.ndarray]:
        """Directed router-to-router links as arrays: src, dst, class (LOCAL or GLOBAL), src port."""
        r, port = np.nonzero(self.port_peer_router >= 0)
        return {"src": r, "dst": self.port_peer_router[r, port], "cls": self.port_class[port], "port": port}

    def __repr__(self):
        return (f"Dragonfly(a={self.a}, p={self.p}, h={self.h}: g={self.g} groups, "
                f"{self.n_routers} routers, {self.n_nodes} nodes, radix {self.radix})")

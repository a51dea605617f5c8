"""Dragonfly interconnect family: topology, network simulators and workloads."""
from .simulator import (
    FlowNetwork,
    NetworkConfig,
    PacketNetwork,
    make_network,
    max_min_rates,
    route_channels,
    zero_load_latency_ns,
)
from .topology import PRESETS, Dragonfly
from .workloads import APPS, Background, Job, app_rounds, place_jobs, run_workloads

__all__ = ["Dragonfly", "PRESETS", "NetworkConfig", "PacketNetwork", "FlowNetwork", "make_network",
           "max_min_rates", "route_channels", "zero_load_latency_ns",
           "APPS", "Background", "Job", "app_rounds", "place_jobs", "run_workloads"]

"""Dragonfly interconnect family: topology, network simulators, workloads, scenarios and hybrid runs.

The forecasters (torch) live in `surrogate.dragonfly.methods` and load with `surrogate.load(run)`.
"""
from .hybrid import run_hybrid
from .scenarios import Scenario, simulate
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
           "APPS", "Background", "Job", "app_rounds", "place_jobs", "run_workloads",
           "Scenario", "simulate", "run_hybrid"]

"""Deterministic simulated shell: virtual clock + virtual network hosting pure protocol cores."""

from scenarios.sim.network import DROP_LOSS, DROP_PARTITION, NetworkModel, StreamConfig
from scenarios.sim.simulator import (
    DROP_REASONS,
    NodeStats,
    SimMetrics,
    SimulationError,
    Simulator,
)

__all__ = [
    "DROP_LOSS",
    "DROP_PARTITION",
    "DROP_REASONS",
    "NetworkModel",
    "NodeStats",
    "SimMetrics",
    "SimulationError",
    "Simulator",
    "StreamConfig",
]

"""Placement policies, one small module each, all used through the same negotiation."""

from __future__ import annotations

from collections.abc import Sequence

from agent.policies.base import Candidate, Policy
from agent.policies.least_loaded import LeastLoaded
from agent.policies.predictive import Predictive
from agent.policies.random_choice import RandomChoice
from agent.policies.round_robin import RoundRobin
from agent.policies.sparrow import Sparrow

NAMES = ("predictive", "least-loaded", "sparrow", "random", "round-robin")


def make_policy(name: str, forecast_step: float,
                horizons: Sequence[int] = (1, 6, 24, 96)) -> Policy:  # fmt: skip
    """Build a policy by name; ValueError names the known ones. `horizons` (in steps of
    `forecast_step` seconds): what element i of a gossiped forecast covers."""
    match name:
        case "predictive":
            return Predictive(forecast_step, horizons)
        case "least-loaded":
            return LeastLoaded()
        case "sparrow":
            return Sparrow()
        case "random":
            return RandomChoice()
        case "round-robin":
            return RoundRobin()
    raise ValueError(f"unknown placement policy {name!r} (known: {', '.join(NAMES)})")


__all__ = ["NAMES", "Candidate", "Policy", "make_policy"]

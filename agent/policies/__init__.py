"""Placement policies, one small module each, all used through the same negotiation."""

from __future__ import annotations

from agent.policies.base import Candidate, Policy
from agent.policies.least_loaded import LeastLoaded
from agent.policies.predictive import Predictive
from agent.policies.random_choice import RandomChoice
from agent.policies.round_robin import RoundRobin
from agent.policies.sparrow import Sparrow

NAMES = ("predictive", "least-loaded", "sparrow", "random", "round-robin")


def make_policy(name: str, forecast_step: float) -> Policy:
    """Build a policy by name; ValueError names the known ones."""
    match name:
        case "predictive":
            return Predictive(forecast_step)
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

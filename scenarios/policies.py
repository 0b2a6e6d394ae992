"""The placement policies a scenario or benchmark can compare, by name.

Each name is a `PlacementConfig.policy` plus the forecaster its nodes use, so that the
meta-learned forecast and its two ablations (the unadapted meta-initialization, the last value)
are compared with everything else held equal.
`omniscient` is not a protocol policy: a central scheduler that sees every node's true present
and future background (`scenarios.omniscient`), the ideal to measure against (simulator only).
"""

from __future__ import annotations

from typing import Any

OMNISCIENT = "omniscient"

# name -> (PlacementConfig.policy, forecaster kind: agent.forecast_tracker.KINDS)
POLICIES: dict[str, tuple[str, str]] = {
    "predictive": ("predictive", "meta"),
    "predictive-unadapted": ("predictive", "meta-init"),
    "predictive-lastvalue": ("predictive", "last-value"),
    "least-loaded": ("least-loaded", "none"),
    "sparrow": ("sparrow", "none"),
    "random": ("random", "none"),
    "round-robin": ("round-robin", "none"),
}
LABELS = {
    "predictive": "predictive (meta-learned peak forecast, adapted per node)",
    "predictive-unadapted": "predictive, unadapted meta-initialization (ablation)",
    "predictive-lastvalue": "predictive, last-value forecast (ablation)",
    OMNISCIENT: "omniscient (ideal baseline, sim only)",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def forecaster(kind: str) -> Any:
    """The forecaster object for the simulator's nodes (the agent loads its own by kind)."""
    from agent.forecast_tracker import make_forecaster

    return make_forecaster(kind)

"""The placement policies a scenario or benchmark can compare, by name.

Each name is a `PlacementConfig.policy` plus the forecaster its nodes use, so that the
meta-learned forecast and its last-value ablation are compared with everything else held equal.
`omniscient` is not a protocol policy: a central scheduler that sees every node's true present
and future background (`scenarios.omniscient`), the ideal to measure against (simulator only).
"""

from __future__ import annotations

from typing import Any

OMNISCIENT = "omniscient"

# name -> (PlacementConfig.policy, forecaster kind: meta | last-value | none)
POLICIES: dict[str, tuple[str, str]] = {
    "predictive": ("predictive", "meta"),
    "predictive-lastvalue": ("predictive", "last-value"),
    "least-loaded": ("least-loaded", "none"),
    "sparrow": ("sparrow", "none"),
    "random": ("random", "none"),
    "round-robin": ("round-robin", "none"),
}
LABELS = {
    "predictive": "predictive (meta-learned forecast)",
    "predictive-lastvalue": "predictive, last-value forecast (ablation)",
    OMNISCIENT: "omniscient (ideal baseline, sim only)",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def forecaster(kind: str) -> Any:
    """The forecaster object for the simulator's nodes (the agent loads its own by kind)."""
    if kind == "meta":
        from metalearn.numpy_runtime import NumpyForecaster

        return NumpyForecaster.load()
    if kind == "last-value":
        from metalearn.numpy_runtime import LastValueForecaster

        return LastValueForecaster()
    return None

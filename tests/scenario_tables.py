"""TOML tables the test scenarios share: the local cluster's fast membership timings, written
from `gossip.config.FAST_SWIM` itself so the tests follow it, and placement timings to match."""

from __future__ import annotations

from gossip.config import FAST_SWIM

FAST_SWIM_TABLE = "[cluster.swim]\n" + "".join(f"{k} = {v!r}\n" for k, v in FAST_SWIM.items())
FAST_PLACEMENT_TABLE = """[cluster.placement]
heartbeat = 0.5
report_retry = 0.3
runner_silence = 5.0
"""
FAST_TABLES = FAST_SWIM_TABLE + "\n" + FAST_PLACEMENT_TABLE

"""Fixtures shared by test modules."""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator

import pytest

NETNS_LOCK = os.path.join(tempfile.gettempdir(), "agora-tests-netns.lock")


@pytest.fixture
def netns_turn() -> Iterator[None]:
    """Wait for, then hold, this machine's one turn at namespaced networks. Only one network can
    own the test subnet, and every local scenario run removes namespaces no runner it knows
    of holds: two such tests on two xdist workers at once broke each other's networks."""
    with open(NETNS_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)

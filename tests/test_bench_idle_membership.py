"""The idle-membership benchmark end to end on a tiny cluster: every figure it reports is a real
measurement (finite, positive), for memberlist too where mlnode is built (as on this machine)."""

from __future__ import annotations

import math

import pytest

from scenarios.bench import idle_membership
from scenarios.bench.lossy import find_mlnode

MEASURES = ("CPU % of a core per node", "RSS MiB per node", "bytes sent/s per node",
            "messages or packets sent/s per node", "start to serving (s)")  # fmt: skip


@pytest.mark.slow
def test_a_tiny_run_reports_every_figure() -> None:
    text = idle_membership.run(n=3, warmup=2.0, window=3.0)
    assert text.startswith(idle_membership.HEADING)
    assert "`python -m scenarios.bench.idle_membership --nodes 3 --warmup 2 --window 3`" in text
    cells = {}
    for line in text.splitlines():
        parts = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and parts[0] in MEASURES:
            cells[parts[0]] = parts[1:]
    assert list(cells) == list(MEASURES)
    built = find_mlnode() is not None
    for measure, (ml, ag, _ratio, target) in cells.items():
        assert math.isfinite(float(ag.replace(",", ""))) and float(ag.replace(",", "")) > 0, (
            measure, ag)  # fmt: skip
        if built:
            v = float(ml.replace(",", ""))
            # a memberlist node may spend less than one 10 ms CPU tick in a 3 s window
            least = 0.0 if measure.startswith("CPU") else 1e-12
            assert math.isfinite(v) and v >= least, (measure, ml)
        else:
            assert ml == "–", (measure, ml)
        assert target
    assert ("memberlist was not measured" in text) is not built
    assert "agora's resource records were republished " in text
    assert "republished – times" not in text
    assert "agora's bytes: " in text and "agora's bytes: – " not in text

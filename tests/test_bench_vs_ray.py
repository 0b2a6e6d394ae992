"""The agora-beside-Ray benchmark, run small for real: a broken measurement (no records, no
samples, a Ray that did not run) shows as a missing, zero or non-finite figure."""

from __future__ import annotations

import math

import pytest

MEASURED = (
    "completed tasks/s",
    "CPU per task (ms)",
    "submit→started p50, one in flight (ms)",
    "submit→started p99, one in flight (ms)",
)


def _cells(section: str, label: str) -> list[str]:
    rows = [ln for ln in section.splitlines() if ln.startswith(f"| {label} |")]
    assert len(rows) == 1, f"no single table row {label!r} in:\n{section}"
    return [c.strip() for c in rows[0].strip("|").split("|")]


@pytest.mark.slow
def test_a_small_run_reports_every_figure() -> None:
    from scenarios.bench import vs_ray

    section = vs_ray.run(agents=3, n_burst=40, n_latency=10, rounds=1)
    assert section.startswith("### Burst throughput beside Ray (same machine, alternating)")
    assert "| measure | Ray | agora | agora/Ray | target |" in section
    assert "--agents 3 --burst 40 --latency 10 --rounds 1" in section
    for label in MEASURED:
        _, ray_cell, agora_cell, ratio, _ = _cells(section, label)
        for cell in (ray_cell, agora_cell, ratio.rstrip("×")):
            value = float(cell)
            assert math.isfinite(value) and value > 0, f"{label}: {cell!r}"
    _, ray_cell, declarations, _, target = _cells(
        section, "false failure declarations during the burst (all rounds)"
    )
    assert ray_cell == "–" and target == "0" and int(declarations) >= 0

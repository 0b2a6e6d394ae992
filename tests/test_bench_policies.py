"""The placement-policy benchmark end to end on a tiny cluster: every policy row, sane numbers."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest

from scenarios.bench import __main__ as bench
from scenarios.bench import policies as bp

DATA = "gcd-vms"  # the shipped bundle (scenarios/traces/): these tests run in any clone

TINY = bp.Settings(
    nodes=8, ramp=30.0, measure=90.0, tail=30.0, history=24, samples_per_step=2, seeds=(1,),
    data=DATA,
)  # fmt: skip


def _rows(text: str) -> dict[tuple[str, str], list[str]]:
    """Main table rows: (rho, policy) -> cells after the policy."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and re.fullmatch(r"0\.\d+", cells[0]):
            out[(cells[0], cells[1])] = cells[2:]
    return out


def _num(cell: str) -> float:
    return float(cell.split()[0])  # "12.3 (10.1–14.0)" -> 12.3


def test_tiny_benchmark_reports_every_policy_with_sane_numbers():
    results = bp.run_all(TINY, jobs=1)
    assert len(results) == len(TINY.policies) * len(TINY.loads)
    for r in results:
        assert r.measured > 0, r
        assert r.completed > 0, r
        assert r.p99 >= r.mean > 0, r
        assert 0.0 <= r.sla_miss <= 1.0, r
        assert r.slowdown >= 1.0 - 1e-9, r  # nothing finishes before its full-speed run time
        assert r.negotiation_msgs > 0 and r.placement_msgs >= r.negotiation_msgs, r
        assert r.stats.get("overcommit", 0) == 0, r
        assert r.stats.get("refused_submits", 0) == 0, r
        if bp.POLICIES[r.policy][1] != "none":
            assert not math.isnan(r.bg_err), r
    text = bp.report(TINY, results, "tiny", 1.0, bp.forecast_accuracy(TINY, 1))
    rows = _rows(text)
    for rho in TINY.loads:
        for p in TINY.policies:
            cells = rows.get((f"{rho:g}", bp.label(p)))
            assert cells is not None, f"no row for {p} at rho {rho}:\n{text}"
            done, measured = (int(x) for x in cells[0].split(" / "))
            assert 0 < done <= measured
            assert _num(cells[2]) >= _num(cells[1]) > 0  # p99 >= mean
    assert "Target" in text and "Ablation" in text and "Forecast error" in text


def test_same_seed_same_numbers_and_ablation_differs_only_in_forecaster():
    a = bp.run_one(TINY, "predictive", 0.9, 2)
    b = bp.run_one(TINY, "predictive", 0.9, 2)
    keys = ("measured", "completed", "mean", "p99", "sla_miss", "placement_msgs")
    assert [getattr(a, k) for k in keys] == [getattr(b, k) for k in keys]
    sc = bp.make_scenario(TINY, 0.9, 2)
    sc7 = bp.make_scenario(TINY, 0.7, 2)
    # common random numbers: the same tasks, later arrivals at the lower load
    assert [x.spec for x in sc7.arrivals[:5]] == [x.spec for x in sc.arrivals[:5]]
    assert sc7.rate == pytest.approx(sc.rate * 0.7 / 0.9)
    assert bp.POLICIES["predictive-lastvalue"] == ("predictive", "last-value")
    assert bp.POLICIES["predictive-unadapted"] == ("predictive", "meta-init")


def test_cli_rejects_bad_arguments_and_bench_knows_the_section(capsys):
    assert bp.main(["--seeds", "0"]) == 2
    assert bp.main(["--policies", "predictive,fastest"]) == 2
    assert "fastest" in capsys.readouterr().err
    assert bp.main(["--loads", "0.9,x"]) == 2
    assert bp.main(["--samples-per-step", "0"]) == 2
    assert "policies" in bench.SECTIONS and "policies" in bench.RUNNERS
    assert dataclasses.replace(bp.QUICK).nodes < bp.Settings().nodes

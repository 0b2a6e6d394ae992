"""Forecasts in placement: the covering horizon, headroom from gossip and from a bidder's own
tracker, and peers' forecasts that are malformed (treated as absent, never a crash)."""

from __future__ import annotations

import math
import random

import msgpack
import pytest

from agent.placement import PlacementCore
from agent.placement_config import PlacementConfig
from agent.policies import make_policy
from agent.policies.base import Candidate, covering, gossiped_headroom, usable_forecast
from agent.tasks import TaskSpec
from gossip import wire
from gossip.config import SwimConfig
from gossip.membership import Membership
from gossip.messages import (
    MAX_FORECAST,
    MAX_LOAD_STEPS,
    Gossip,
    GossipOnly,
    Message,
    ResourceRecord,
)
from metalearn.peak_runtime import LastValuePeak

HS = (1, 6, 24, 96)  # the default horizons, in 300-s steps: 5 min, 30 min, 2 h, 8 h
STEP = 300.0


def test_covering_is_the_shortest_horizon_that_covers_the_run() -> None:
    assert covering(HS, STEP, 0.0) == 0
    assert covering(HS, STEP, 300.0) == 0
    assert covering(HS, STEP, 301.0) == 1
    assert covering(HS, STEP, 1800.0) == 1
    assert covering(HS, STEP, 3600.0) == 2  # a 1 h task: the 2 h peak
    assert covering(HS, STEP, 7200.0) == 2
    assert covering(HS, STEP, 7201.0) == 3
    assert covering(HS, STEP, 28800.0) == 3  # 8 h
    assert covering(HS, STEP, 1e9) == 3  # longer than every horizon: the longest
    assert covering(HS, STEP, math.inf) == 3


@pytest.mark.parametrize(("forecast", "ok"), [
    ((0.1, 0.2, 0.2, 0.9), True),
    ((0.0, 0.0, 0.0, 1.0), True),
    ((), False),
    ((0.1, 0.2, 0.3), False),  # another length (e.g. a peer with other horizons)
    ((0.1, 0.2, 0.3, 0.4, 0.5, 0.6), False),  # the 6 per-step values of older agents
    ((0.3, 0.2, 0.4, 0.5), False),  # decreasing: not peaks
    ((0.1, 0.2, 0.3, 1.5), False),  # more than the node
    ((-0.1, 0.2, 0.3, 0.4), False),
    ((0.1, math.nan, 0.3, 0.4), False),
])  # fmt: skip
def test_usable_forecast(forecast: tuple[float, ...], ok: bool) -> None:
    assert usable_forecast(forecast, HS) is ok


def _rec(forecast: tuple[float, ...], load: float = 0.5, alloc: float = 1.0) -> ResourceRecord:
    return ResourceRecord("n", 1, cpus=8.0, load=load, alloc_cpus=alloc, forecast=forecast)


def test_gossiped_headroom_uses_the_covering_horizon_or_the_load() -> None:
    rec = _rec((0.1, 0.2, 0.4, 0.8))
    assert gossiped_headroom(rec, TaskSpec(("x",), expected=60.0), STEP, HS) == pytest.approx(
        8 * 0.9 - 1)
    assert gossiped_headroom(rec, TaskSpec(("x",), expected=3600.0), STEP, HS) == pytest.approx(
        8 * 0.6 - 1)
    assert gossiped_headroom(rec, TaskSpec(("x",), expected=8 * 3600.0), STEP,
                             HS) == pytest.approx(8 * 0.2 - 1)  # fmt: skip
    assert gossiped_headroom(rec, TaskSpec(("x",), expected=1e6), STEP, HS) == pytest.approx(
        8 * 0.2 - 1)
    for bad in ((), (0.1, 0.2), (0.5, 0.1, 0.1, 0.1), (0.1, 0.2, 0.3, 2.0)):
        assert gossiped_headroom(_rec(bad), TaskSpec(("x",), expected=60.0), STEP,
                                 HS) == pytest.approx(8 * 0.5 - 1)  # fmt: skip


def test_predictive_ranks_by_the_peak_over_the_tasks_run() -> None:
    # a is quiet now but peaks within two hours; b is busier now and stays flat
    a = Candidate("a", "sim://a", _rec((0.1, 0.1, 0.9, 0.9), load=0.1, alloc=0.0))
    b = Candidate("b", "sim://b", _rec((0.4, 0.4, 0.4, 0.4), load=0.4, alloc=0.0))
    bad = Candidate("c", "sim://c", _rec((0.0, 0.0, 0.0, 5.0), load=0.95, alloc=0.0))
    pol = make_policy("predictive", STEP, HS)
    rng = random.Random(0)
    short, long = TaskSpec(("x",), expected=600.0), TaskSpec(("x",), expected=4 * 3600.0)
    assert [c.node for c in pol.choose(short, [a, b, bad], 2, rng)] == ["a", "b"]
    assert [c.node for c in pol.choose(long, [a, b, bad], 2, rng)] == ["b", "a"]
    assert [c.node for c in pol.choose(long, [bad, a], 1, rng)] == ["a"]  # c: its load, 95 %


def _decoded(forecast_steps: list[object]) -> ResourceRecord:
    """A gossiped record whose forecast is set on the wire (in thousandths), decoded."""
    rec = ResourceRecord("p", 3, cpus=8.0, load=0.5)
    raw = msgpack.unpackb(wire.encode(Message("p", "sim://p", 1, GossipOnly(Gossip((), (rec,))))))
    raw[5][0][1][0][11] = forecast_steps  # envelope -> body [gossip] -> [members, resources]
    return wire.decode(msgpack.packb(raw)).body.gossip.resources[0]


@pytest.mark.parametrize("steps", [
    [100, 200, 300],  # wrong length
    [100, 200, 300, 1500],  # above the node
    [100, -50, 300, 400],
    [400, 300, 200, 100],  # decreasing
    [],
])  # fmt: skip
def test_a_peers_malformed_forecast_is_carried_and_then_treated_as_absent(steps: list) -> None:
    rec = _decoded(steps)  # the wire carries it: not worth dropping a whole gossip message
    assert rec.forecast == tuple(x / 1000 for x in steps)
    spec = TaskSpec(("x",), expected=3600.0)
    assert gossiped_headroom(rec, spec, STEP, HS) == pytest.approx(8 * 0.5)  # its load


def test_a_peers_forecast_beyond_the_wires_bounds_is_a_malformed_message() -> None:
    for steps in ([0.5, 0.6, 0.7, 0.8], [MAX_LOAD_STEPS + 1] * 4,
                  [1] * (MAX_FORECAST + 1), "0.1", [True] * 4):  # fmt: skip
        with pytest.raises(wire.WireError) as e:
            _decoded(steps)  # type: ignore[arg-type]
        assert e.value.reason == "malformed"


def test_a_good_peer_forecast_survives_the_wire_and_is_used() -> None:
    rec = _decoded([100, 200, 400, 800])
    assert usable_forecast(rec.forecast, HS)
    assert gossiped_headroom(rec, TaskSpec(("x",), expected=3600.0), STEP,
                             HS) == pytest.approx(8 * 0.6)  # fmt: skip


# ------------------------------------------------------------------ a bidder's own headroom


def _core(**cfg: object) -> PlacementCore:
    view = Membership("me", "sim://me", random.Random(0), SwimConfig(),
                      ResourceRecord("me", 0, cpus=8.0))  # fmt: skip
    view.join(0.0, [])
    return PlacementCore(view, PlacementConfig(**cfg), forecaster=LastValuePeak())  # type: ignore[arg-type]


def test_bid_headroom_uses_the_covering_horizon_of_its_own_forecast() -> None:
    core = _core()
    core.worker.load = 0.3
    assert core.worker.headroom(3600.0) == pytest.approx(8 * 0.7)  # no forecast yet: the load
    core.worker.forecast = (0.1, 0.2, 0.4, 0.8)
    assert core.worker.headroom(60.0) == pytest.approx(8 * 0.9)
    assert core.worker.headroom(1800.0) == pytest.approx(8 * 0.8)
    assert core.worker.headroom(3600.0) == pytest.approx(8 * 0.6)
    assert core.worker.headroom(6 * 3600.0) == pytest.approx(8 * 0.2)
    assert core.worker.headroom(1e7) == pytest.approx(8 * 0.2)
    core.worker.forecast = (0.1, 0.2)  # not one per horizon: the load
    assert core.worker.headroom(60.0) == pytest.approx(8 * 0.7)


def test_a_forecaster_without_the_configured_horizons_or_quantile_is_refused() -> None:
    with pytest.raises(ValueError, match="forecast_horizons"):
        _core(forecast_horizons=(1, 12))
    with pytest.raises(ValueError, match="forecast_quantile"):
        _core(forecast_quantile=0.75)
    assert _core(forecast_horizons=(6, 96), forecast_quantile=0.5).tracker is not None


def test_the_agent_refuses_at_start_a_forecaster_that_lacks_the_configured_forecast() -> None:
    from agent.agent import AgentError, check_forecast_config, load_forecaster

    fc = load_forecaster("last-value")
    assert load_forecaster("last-value") is fc  # once per process
    assert load_forecaster("none") is None
    check_forecast_config(fc, PlacementConfig())
    check_forecast_config(None, PlacementConfig(forecast_horizons=(5,)))  # nothing to check
    for cfg, needle in ((PlacementConfig(forecast_horizons=(1, 12)), "not [12]"),
                        (PlacementConfig(forecast_quantile=0.99), "not 0.99"),
                        (PlacementConfig(forecast_history=10), "forecast_history (10)")):
        with pytest.raises(AgentError) as e:
            check_forecast_config(fc, cfg)
        assert needle in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(AgentError, match="unknown forecaster 'oracle'"):
        load_forecaster("oracle")


def test_a_node_fed_a_long_history_forecasts_once_when_asked() -> None:
    calls = []

    class Counting(LastValuePeak):
        def forecast(self, history):  # noqa: ANN001, ANN202
            calls.append(len(history))
            return super().forecast(history)

    view = Membership("me", "sim://me", random.Random(0), SwimConfig(),
                      ResourceRecord("me", 0, cpus=8.0))  # fmt: skip
    view.join(0.0, [])
    core = PlacementCore(view, PlacementConfig(publish_interval=1.0), forecaster=Counting())
    for j in range(200, 0, -1):  # a warm-up: 200 past steps fed at once
        core.observe_load(-j * STEP, 0.25)
    assert calls == [] and core.tracker is not None and core.tracker.adaptations > 0
    core.on_tick(0.0)  # the publish asks for it
    assert len(calls) == 1 and view.resources.forecast == (0.25,) * 4
    core.on_tick(5.0)
    assert len(calls) == 1  # nothing new observed

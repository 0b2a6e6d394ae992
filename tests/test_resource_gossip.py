"""What a node says about its own resources: smoothed, bounded, and in the units the wire
carries (issue 10: most of an idle agent's bytes were its record republished on load noise)."""

from __future__ import annotations

import random

import msgpack
import pytest

from agent.placement import PlacementCore
from agent.placement_config import PlacementConfig
from gossip import wire
from gossip.config import SwimConfig
from gossip.membership import Membership
from gossip.messages import Gossip, GossipOnly, Message, ResourceRecord, quantized
from metalearn.peak_runtime import LastValuePeak


def _node(**cfg: float) -> tuple[Membership, PlacementCore]:
    view = Membership("me", "sim://me", random.Random(0), SwimConfig(),
                      ResourceRecord("me", 0, cpus=4.0))  # fmt: skip
    view.join(0.0, [])
    return view, PlacementCore(view, PlacementConfig(**cfg))


def test_the_gossiped_load_is_averaged_so_noise_does_not_republish_the_record() -> None:
    view, core = _node(publish_smoothing=10.0, publish_interval=1.0, publish_delta=0.05)
    rng = random.Random(1)
    versions = set()
    for t in range(1, 121):  # two minutes of samples around 30 %, ±15 % noise
        core.observe_load(float(t), 0.3 + rng.uniform(-0.15, 0.15))
        core.on_tick(float(t))
        versions.add(view.resources.version)
    # raw samples move by more than publish_delta almost every second: ~100 versions before
    assert len(versions) < 15
    assert abs(view.resources.load - 0.3) < 0.05
    core.observe_load(121.0, 0.9)  # one spike moves the gossiped load a little, not to 0.9
    core.on_tick(121.0)
    assert view.resources.load < 0.4 and core.worker.load == 0.9  # its own bids see the sample
    for t in range(122, 160):  # a lasting change shows within a few time constants
        core.observe_load(float(t), 0.9)
        core.on_tick(float(t))
    assert view.resources.load > 0.8


def test_a_forecast_is_gossiped_bounded_to_the_node_and_not_at_all_when_broken() -> None:
    view, core = _node(publish_interval=1.0)
    core.worker.forecast = (0.5, 1e35, -3.0, 0.2)  # one peak per horizon (1, 6, 24, 96)
    core.on_tick(1.0)
    assert view.resources.forecast == (0.5, 1.0, 1.0, 1.0)  # a share of the node, never falling
    core.worker.forecast = (0.2, 0.1, 0.4, 0.3)
    core.on_tick(20.0)
    assert view.resources.forecast == (0.2, 0.2, 0.4, 0.4)
    core.worker.forecast = (0.2, float("nan"), 0.3, 0.4)
    core.on_tick(40.0)
    assert view.resources.forecast == ()
    core.worker.forecast = (0.2, 0.3)  # not one per configured horizon
    core.on_tick(60.0)
    assert view.resources.forecast == ()


def test_the_gossiped_forecast_is_the_trackers_quantile_peak_per_horizon() -> None:
    view = Membership("me", "sim://me", random.Random(0), SwimConfig(),
                      ResourceRecord("me", 0, cpus=4.0))  # fmt: skip
    view.join(0.0, [])
    cfg = PlacementConfig(forecast_step=10.0, forecast_horizons=(1, 24), publish_interval=1.0)
    core = PlacementCore(view, cfg, forecaster=LastValuePeak())
    for t in range(0, 300):  # 30 steps of 10 s: more than the window (24)
        core.observe_load(float(t), 0.25 if t < 290 else 0.9)
        core.on_tick(float(t))
    assert core.tracker is not None and core.tracker.horizons == (1, 24)
    assert view.resources.forecast == (0.25, 0.25)  # the last closed step, at both horizons
    assert core.worker.headroom(60.0) == pytest.approx(4.0 * 0.75)
    assert core.stats["forecast_failures"] == 0


def test_loads_travel_in_thousandths_and_an_own_record_echoed_back_is_no_news() -> None:
    view, _ = _node()
    view.update_resources(1.0, load=0.123456789, mem_load=0.5000004, forecast=(0.33333333,))
    mine = view.resources
    assert (mine.load, mine.mem_load, mine.forecast) == (0.123, 0.5, (0.333,))
    echoed = wire.decode(wire.encode(Message("b", "sim://b", 1, GossipOnly(Gossip((), (mine,))))))
    assert echoed.body.gossip.resources == (mine,)  # exactly: no refutation, no republish
    view.on_message(2.0, echoed)
    assert view.resources == mine and view.stats["record_refuted"] == 0
    assert quantized(0.0005) in (0.0, 0.001)


def test_a_load_not_in_thousandths_is_malformed() -> None:
    rec = ResourceRecord("n", 1, cpus=1.0, load=0.25)
    frame = msgpack.unpackb(wire.encode(Message("n", "a", 0, GossipOnly(Gossip((), (rec,))))))
    fields = frame[5][0][1][0]  # envelope -> body [gossip] -> gossip [members, resources]
    assert fields[9] == 250
    for bad in (0.25, -1, 10**9 + 1, True):
        fields[9] = bad
        with pytest.raises(wire.WireError, match="resource.load"):
            wire.decode(msgpack.packb(frame))

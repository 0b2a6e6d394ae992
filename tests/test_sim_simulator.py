"""The deterministic simulated shell: clock, ticks, network model, failures, determinism."""

from __future__ import annotations

import math

import pytest

from agent.execution import StopTask
from gossip.effects import Outgoing, StatusChange
from gossip.messages import (
    Gossip,
    MemberUpdate,
    Message,
    Ping,
    ResourceRecord,
    Status,
    SyncReply,
)
from scenarios.sim import NetworkModel, SimulationError, Simulator
from scenarios.sim.toys import Recorder, Ticker, flood_cluster


def _pair(sim: Simulator, reply: bool = False) -> tuple[Recorder, Recorder]:
    a, b = Recorder("a", reply=reply), Recorder("b", reply=reply)
    sim.add_node("a", a)
    sim.add_node("b", b)
    return a, b


def _send_pings(sim: Simulator, src: str, dst: str, n: int) -> None:
    for _ in range(n):
        sim.call(src, lambda core, now: core.ping(dst))


# ------------------------------------------------------------------ clock and ticks


def test_ticks_at_requested_times_and_clock_advances_to_target():
    sim = Simulator(1)
    t = Ticker("t", period=0.25, start=0.1)
    sim.add_node("t", t)
    sim.run_until(1.0)
    assert t.ticks == pytest.approx([0.1, 0.35, 0.6, 0.85])
    assert sim.now == 1.0
    sim.run_for(0.5)
    assert sim.now == 1.5
    assert len(t.ticks) == 6
    with pytest.raises(SimulationError):
        sim.run_until(1.0)


def test_one_live_tick_per_node_when_wakeup_moves_earlier_and_later():
    sim = Simulator(1)
    t = Ticker("t", period=1.0, start=5.0)
    sim.add_node("t", t)

    def move(to):
        def fn(core, now):
            core.next = to

        return fn

    sim.call("t", move(2.0))  # earlier: the tick at 5.0 becomes stale
    sim.call("t", move(3.0))  # later again: the tick at 2.0 becomes stale
    sim.run_until(3.5)
    assert t.ticks == [3.0]
    # a wakeup in the past is run at the current time, never before it
    sim.call("t", move(1.0))
    sim.run_until(3.5)
    assert t.ticks == [3.0, 3.5]


def test_core_that_never_advances_its_wakeup_is_reported():
    class Spinner(Ticker):
        def on_tick(self, now):
            return []

    sim = Simulator(1)
    sim.add_node("s", Spinner("s", period=1.0, start=0.5))
    with pytest.raises(SimulationError):
        sim.run_until(1.0)


def test_schedule_runs_callbacks_at_virtual_time():
    sim = Simulator(1)
    seen = []
    sim.schedule(0.3, lambda s: seen.append(s.now))
    sim.schedule(0.1, lambda s: seen.append(s.now))
    sim.run_until(1.0)
    assert seen == [0.1, 0.3]


def test_run_until_true_returns_time_or_none():
    sim = Simulator(1)
    t = Ticker("t", period=0.1, start=0.0)
    sim.add_node("t", t)
    when = sim.run_until_true(lambda: len(t.ticks) >= 5, timeout=10, check_every=0.05)
    assert when is not None and 0.4 <= when <= 0.45
    assert sim.run_until_true(lambda: False, timeout=1.0) is None
    assert sim.now == pytest.approx(when + 1.0)


# ------------------------------------------------------------------ network


def test_delivery_latency_within_configured_bounds_and_reordering_happens():
    sim = Simulator(7, NetworkModel(latency=0.010, jitter=0.004))
    a, b = _pair(sim)
    _send_pings(sim, "a", "b", 2000)
    sim.run_until(1.0)
    assert len(b.got) == 2000
    times = [t for t, _ in b.got]
    assert min(times) >= 0.010 and max(times) < 0.014
    assert max(times) - min(times) > 0.003  # jitter really spreads them
    seqs = [m.seq for _, m in b.got]
    assert seqs != sorted(seqs)  # same-link messages can be reordered by jitter
    st = sim.node_stats("a")
    assert st.sent == 2000 and sim.node_stats("b").received == 2000


def test_per_link_latency_override():
    sim = Simulator(7, NetworkModel(latency=0.001, jitter=0.0))
    a, b = _pair(sim)
    c = Recorder("c")
    sim.add_node("c", c)
    sim.set_link("a", "b", latency=0.5)
    sim.call("a", lambda core, now: core.ping("b") + core.ping("c"))
    sim.run_until(1.0)
    assert b.got[0][0] == pytest.approx(0.5)
    assert c.got[0][0] == pytest.approx(0.001)


def test_loss_drops_about_the_configured_fraction():
    sim = Simulator(3)
    a, b = _pair(sim)
    sim.set_loss(0.3)
    _send_pings(sim, "a", "b", 10_000)
    sim.run_until(1.0)
    m = sim.metrics()
    assert 2700 < m.dropped["loss"] < 3300
    assert m.delivered == len(b.got) == 10_000 - m.dropped["loss"]
    # a lossless per-link override beats the global loss
    sim.set_link("a", "b", loss=0.0)
    _send_pings(sim, "a", "b", 1000)
    sim.run_for(1.0)
    assert len(b.got) == 10_000 - m.dropped["loss"] + 1000


def test_partition_blocks_between_groups_and_heal_restores():
    sim = Simulator(5)
    recs = {x: Recorder(x) for x in "abcd"}
    for x, r in recs.items():
        sim.add_node(x, r)

    def all_to_all():
        for s in "abcd":
            for d in "abcd":
                if s != d:
                    sim.call(s, lambda core, now, d=d: core.ping(d))

    sim.partition(["a", "b"])  # c and d are unlisted: they form the other group
    all_to_all()
    sim.run_for(1.0)
    assert {m.sender for _, m in recs["a"].got} == {"b"}
    assert {m.sender for _, m in recs["c"].got} == {"d"}
    assert sim.metrics().dropped["partition"] == 8
    sim.heal()
    all_to_all()
    sim.run_for(1.0)
    assert {m.sender for _, m in recs["a"].got[1:]} == {"b", "c", "d"}
    assert sim.metrics().dropped["partition"] == 8
    with pytest.raises(ValueError):
        sim.partition(["a"], ["a", "b"])


def test_unknown_address_is_dropped_and_counted():
    sim = Simulator(1)
    _pair(sim)
    sim.call("a", lambda core, now: core.ping("nowhere"))
    sim.run_for(1.0)
    assert sim.metrics().dropped["unknown_addr"] == 1
    assert sim.metrics().delivered == 0


# ------------------------------------------------------------------ failures


def test_crash_stops_ticks_and_delivery():
    sim = Simulator(1)
    t = Ticker("t", period=0.1, start=0.0)
    sim.add_node("t", t)
    a = Recorder("a")
    sim.add_node("a", a)
    sim.run_until(0.35)
    assert len(t.ticks) == 4
    sim.call("a", lambda core, now: core.ping("t"))  # in flight when t crashes
    sim.crash("t")
    sim.call("a", lambda core, now: core.ping("t"))
    sim.run_until(2.0)
    assert len(t.ticks) == 4 and t.got == []
    assert sim.metrics().dropped["crashed"] == 2
    assert sim.call("t", lambda core, now: core.ping("a")) is None
    sim.run_for(1.0)
    assert a.got == []
    assert sim.state("t") == "crashed" and sim.live_addrs() == ["a"]
    # a crashed address can host a restarted process
    t2 = Ticker("t", period=0.1, start=sim.now)
    sim.add_node("t", t2)
    sim.run_for(0.05)
    assert t2.ticks == [3.0]
    with pytest.raises(SimulationError):
        sim.add_node("a", Recorder("a"))


def test_pause_buffers_in_order_and_ticks_right_after_resume():
    sim = Simulator(1, NetworkModel(latency=0.01, jitter=0.0))
    t = Ticker("t", period=0.1, start=0.0)
    sim.add_node("t", t)
    a = Recorder("a")
    sim.add_node("a", a)
    sim.run_until(0.25)
    ticks_before = list(t.ticks)
    sim.pause("t")
    for _ in range(5):
        sim.call("a", lambda core, now: core.ping("t"))
        sim.run_for(0.1)
    deferred = []
    sim.call("t", lambda core, now: deferred.append(now))  # work of a stopped process waits
    sim.run_until(2.0)
    assert t.ticks == ticks_before and t.got == [] and deferred == []
    assert sim.state("t") == "paused"

    sim.resume("t")
    assert [m.seq for _, m in t.got] == [1, 2, 3, 4, 5]
    assert all(when == 2.0 for when, _ in t.got)
    assert deferred == [2.0]
    assert t.ticks[-1] == 2.0  # a tick right after resume
    sim.run_until(2.35)
    assert t.ticks[len(ticks_before) :] == pytest.approx([2.0, 2.1, 2.2, 2.3])
    with pytest.raises(SimulationError):
        sim.resume("t")


def test_crash_while_paused_drops_the_buffer():
    sim = Simulator(1)
    a, b = _pair(sim)
    sim.pause("b")
    _send_pings(sim, "a", "b", 3)
    sim.run_for(1.0)
    sim.crash("b")
    assert sim.metrics().dropped["crashed"] == 3 and b.got == []


# ------------------------------------------------------------------ determinism


def _flood_run(seed: int, trace_messages: bool = False) -> Simulator:
    sim = Simulator(seed, NetworkModel(loss=0.05), trace_messages=trace_messages)
    addrs = flood_cluster(sim, 50, seed, period=0.05, fanout=2)
    sim.run_until(1.0)
    sim.partition(addrs[:10])
    sim.crash(addrs[20])
    sim.pause(addrs[30])
    sim.run_until(2.0)
    sim.heal()
    sim.resume(addrs[30])
    sim.run_until(3.0)
    return sim


def test_same_seed_same_fingerprint_different_seed_different():
    a, b, c = _flood_run(11), _flood_run(11), _flood_run(12)
    assert a.metrics().delivered > 5000
    assert a.fingerprint() == b.fingerprint()
    assert a.trace == b.trace
    assert a.fingerprint() != c.fingerprint()


def test_trace_messages_records_deliveries_identically():
    a, b = _flood_run(4, trace_messages=True), _flood_run(4, trace_messages=True)
    deliveries = [e for e in a.trace if e[1] == "deliver"]
    assert len(deliveries) == a.metrics().delivered
    assert a.trace == b.trace and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != _flood_run(4).fingerprint()


# ------------------------------------------------------------------ wire fidelity


def test_encode_messages_round_trips_real_messages_and_counts_bytes():
    sim = Simulator(2, encode_messages=True)
    a, b = _pair(sim, reply=True)
    rec = ResourceRecord("a", 3, cpus=4.0, memory=1 << 30, labels={"zone": "x"}, forecast=(0.5,))
    msgs = [
        Message("a", "a", 1, Ping("b", Gossip((MemberUpdate("c", "sim://c", 2, Status.SUSPECT),)))),
        Message("a", "a", 2, SyncReply((MemberUpdate("a", "a", 0, Status.ALIVE),), (rec,),
                                       ("b",))),
    ]
    sim.call("a", lambda core, now: [Outgoing("b", m) for m in msgs])
    sim.run_for(1.0)
    got = [m for _, m in b.got]
    assert got == msgs
    assert got[0] is not msgs[0]  # really went through bytes
    assert [m.sender for _, m in a.got] == ["b"]  # the ack to the ping
    m = sim.metrics()
    assert m.bytes_sent == m.bytes_delivered > 50
    assert sim.node_stats("a").bytes_sent == sim.node_stats("b").bytes_received


def test_encode_messages_counts_unencodable_messages_as_wire_drops():
    sim = Simulator(2, encode_messages=True)
    _pair(sim)
    bad = Message("a", "a", 1, Ping("x" * 300))  # id longer than the wire allows: decode rejects
    sim.call("a", lambda core, now: [Outgoing("b", bad)])
    sim.run_for(1.0)
    assert sim.metrics().dropped["wire"] == 1 and sim.metrics().delivered == 0
    assert any(e[1] == "wire_error" for e in sim.trace)


def test_status_changes_are_kept_per_node_and_other_effects_refused():
    sim = Simulator(3)
    _pair(sim)
    seen = [StatusChange(0.0, "b", Status.SUSPECT, 3), StatusChange(0.0, "b", Status.DEAD, 3)]
    sim.call("a", lambda core, now: [seen[0], *core.ping("b"), seen[1]])
    assert sim.take_events("b") == []
    assert sim.take_events("a") == seen and sim.take_events("a") == []
    assert sim.node_stats("a").sent == 1
    with pytest.raises(SimulationError, match="StopTask is not the network's"):
        sim.call("a", lambda core, now: [StopTask("t", 1)])


def test_network_model_validates():
    with pytest.raises(ValueError):
        NetworkModel(loss=1.5)
    with pytest.raises(ValueError):
        NetworkModel(latency=-1)
    with pytest.raises(ValueError):
        NetworkModel(latency=math.inf)

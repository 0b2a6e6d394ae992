"""The simulator's stream model: what real agents send over ZeroMQ's TCP arrives in order, loss
turns into delay, a partition into a burst of stale messages at the heal; datagrams unchanged."""

from __future__ import annotations

import math
import random

import pytest

from gossip.effects import Outgoing, ResetStream
from gossip.messages import Message, Status, Sync
from scenarios.sim import NetworkModel, Simulator, StreamConfig
from scenarios.sim.cluster import bootstrap_swim_cluster, build_swim_cluster, converged, view_of
from scenarios.sim.placement_cluster import PlacementCluster
from scenarios.sim.toys import Recorder, flood_cluster

LAT = 0.01
# cumulative RTO waits after k consecutive losses at the defaults: 0, 0.2, 0.6, 1.4, 3.0, ...
BACKOFF = [round(sum(min(0.2 * 2**i, 120.0) for i in range(k)), 6) for k in range(16)]


def _sim(seed: int = 1, loss: float = 0.0, jitter: float = 0.0,
         streams: bool | StreamConfig = True, **kw) -> Simulator:  # fmt: skip
    sim = Simulator(seed, NetworkModel(latency=LAT, jitter=jitter, loss=loss, streams=streams),
                    **kw)  # fmt: skip
    for x in "abc":
        sim.add_node(x, Recorder(x))
    return sim


def _syncs(src: str, dst: str, seqs: range | list[int]) -> list[Outgoing]:
    return [Outgoing(dst, Message(src, src, s, Sync(()))) for s in seqs]


def _send(sim: Simulator, src: str, dst: str, *seqs: int, at: float | None = None) -> None:
    """Stream messages src->dst now, or at virtual time `at`."""

    def go(s: Simulator) -> None:
        s.call(src, lambda core, now: _syncs(src, dst, list(seqs)))

    if at is None:
        go(sim)
    else:
        sim.schedule(at, go)


def _got(sim: Simulator, addr: str) -> list[tuple[float, int]]:
    """(arrival time rounded to 1 µs, seq) of every Sync addr received."""
    return [(round(t, 6), m.seq) for t, m in sim.core(addr).got if isinstance(m.body, Sync)]


def _arrival(sent: float) -> float:
    """When a message sent (or retried) at `sent` arrives without jitter, as `_got` rounds it."""
    return round(sent + LAT, 6)


def _pings(sim: Simulator, addr: str) -> list[tuple[float, int]]:
    return [(round(t, 6), m.seq) for t, m in sim.core(addr).got if not isinstance(m.body, Sync)]


# ------------------------------------------------------------------ order and loss


def test_stream_messages_arrive_in_order_under_jitter_datagrams_do_not():
    sim = _sim(7, jitter=0.004)
    for k in range(1, 501):  # 1 ms apart, well within the 4 ms of jitter
        at = (k - 1) * 0.001
        _send(sim, "a", "b", k, at=at)
        sim.schedule(at, lambda s: s.call("a", lambda core, now: core.ping("b")))
    sim.run_until(1.0)
    got = [(t, m.seq) for t, m in sim.core("b").got if isinstance(m.body, Sync)]
    assert [k for _, k in got] == list(range(1, 501))
    for t, k in got:  # held back at most until its predecessor, itself within the jitter
        assert (k - 1) * 0.001 + LAT <= t < (k - 1) * 0.001 + LAT + 0.004
    held = sum(1 for (t0, _), (t1, _) in zip(got, got[1:], strict=False) if t1 == t0)
    assert held > 50  # would have overtaken an earlier one, waited for it instead
    pings = [k for _, k in _pings(sim, "b")]
    assert len(pings) == 500 and pings != sorted(pings)  # datagrams keep being reordered


def test_loss_becomes_delay_with_rto_backoff_and_head_of_line_blocking():
    sim = _sim(4, loss=0.2)
    for k in range(1, 201):  # 10 s apart: most find the link free, some wait behind another
        _send(sim, "a", "b", k, at=10.0 * (k - 1))
    for _ in range(1000):
        sim.call("a", lambda core, now: core.ping("c"))
    sim.run_until(5000.0)
    got = _got(sim, "b")
    assert [k for _, k in got] == list(range(1, 201))  # every one arrives, in order
    m = sim.metrics()
    assert 150 < m.dropped["loss"] < 250  # all of them datagrams: ~20 % of the 1000 pings
    assert m.dropped["loss"] + len(_pings(sim, "c")) == 1000
    on_time = own = behind = 0
    for i, (t, k) in enumerate(got):
        wait = round(t - 10.0 * (k - 1) - LAT, 6)
        if wait == 0.0:
            on_time += 1
        elif wait in BACKOFF:
            own += 1  # its own data was lost, the link was free: an RTO backoff sum
        else:  # it waited for the link: an earlier message not yet acknowledged
            assert i > 0 and wait > 0
            behind += 1
    assert on_time > 80 and own > 20 and behind >= 1, (on_time, own, behind)
    # a connection in trouble stalls for seconds (RTOs double while data or acks are lost)
    assert max(t - 10.0 * (k - 1) for t, k in got) >= BACKOFF[4]


def test_under_heavy_loss_a_steady_stream_falls_behind_by_seconds():
    """One message a second at 40 % loss each way is more than a connection that keeps
    retransmitting can carry: what the agents saw when probes rode TCP."""
    sim = _sim(6, loss=0.4)
    for k in range(1, 61):
        _send(sim, "a", "b", k, at=k - 1.0)
    sim.run_until(60.0)
    got = _got(sim, "b")
    assert len(got) < 45 and [k for _, k in got] == list(range(1, len(got) + 1))
    late = [t - (k - 1.0) for t, k in got]
    assert sorted(late)[len(late) // 2] > 1.0  # the median message is over a second late


def test_after_a_retransmission_nothing_new_is_sent_until_it_is_acknowledged():
    """Acknowledgements lost (b -> a only): every message arrives at its first try, but the
    sender retransmits until its connection times out and sends nothing new meanwhile."""
    sim = _sim(3, streams=StreamConfig(retries=2))
    sim.set_link("b", "a", loss=1.0, symmetric=False)
    _send(sim, "a", "b", 1)
    _send(sim, "a", "b", 2, at=0.01)
    sim.run_for(5.0)
    # 1 at once; its retries at 0.2 and 0.6 (tries 1 and 2) are duplicates; 2 waits until 0.6
    assert _got(sim, "b") == [(_arrival(0.0), 1), (_arrival(0.6), 2)]


def test_a_message_lost_retries_times_in_a_row_times_the_connection_out():
    sim = _sim(2, loss=1.0, streams=StreamConfig(retries=3))
    _send(sim, "a", "b", 1, 2)
    sim.run_for(10.0)
    assert _got(sim, "b") == [] and sim.metrics().dropped["loss"] == 2
    sim.set_loss(0.0)
    _send(sim, "a", "b", 3)
    sim.run_for(1.0)
    assert _got(sim, "b") == [(_arrival(10.0), 3)]


# ------------------------------------------------------------------ partitions


def test_partition_buffers_up_to_the_bound_and_bursts_at_the_first_retry_after_heal():
    sim = _sim(5, streams=StreamConfig(buffer=6))
    sim.partition(["a"])
    _send(sim, "a", "b", 1, 2, 3)
    _send(sim, "a", "c", *range(1, 9))  # 6 fit, 2 are dropped
    sim.call("a", lambda core, now: core.ping("b"))  # a datagram: dropped
    _send(sim, "a", "b", 4, at=1.0)
    sim.schedule(2.0, lambda s: s.heal())
    _send(sim, "a", "b", 5, at=2.5)  # healed, but the link is still waiting for its retry
    sim.schedule(2.5, lambda s: s.call("a", lambda core, now: core.ping("b")))
    sim.run_until(2.99)
    assert _got(sim, "b") == [] and _got(sim, "c") == []
    assert sim.stream_backlog("a", "b") == 5 and sim.stream_backlog("a", "c") == 6
    m = sim.metrics()
    assert m.dropped["queue"] == 2 and m.dropped["partition"] == 1
    assert _pings(sim, "b") == [(_arrival(2.5), 2)]  # fresh datagrams pass the stale stream
    # retries at 0.2, 0.6, 1.4, 3.0: the whole backlog arrives at the first one after the heal
    sim.run_until(3.5)
    assert _got(sim, "b") == [(_arrival(3.0), k) for k in (1, 2, 3, 4, 5)]
    assert _got(sim, "c") == [(_arrival(3.0), k) for k in range(1, 7)]
    assert sim.stream_backlog("a", "b") == 0
    _send(sim, "a", "b", 6)
    sim.run_for(0.5)
    assert _got(sim, "b")[-1] == (_arrival(3.5), 6)  # flowing again
    assert sim.metrics().dropped_total == 3


def test_retry_backoff_doubles_up_to_rto_max():
    sim = _sim(1, streams=StreamConfig(rto_min=0.1, rto_max=0.4))
    sim.partition(["a"])
    _send(sim, "a", "b", 1)
    sim.schedule(1.2, lambda s: s.heal())
    sim.run_until(5.0)
    # retries at 0.1, 0.3, 0.7, 1.1, 1.5 (0.1, 0.2, 0.4, then capped at 0.4)
    assert _got(sim, "b") == [(_arrival(1.5), 1)]


def test_reset_drops_the_backlog_and_later_messages_flow():
    sim = _sim(4)
    sim.partition(["a"])
    _send(sim, "a", "b", 1, 2, 3, 4)
    assert sim.reset_stream("a", "b") == 4
    assert sim.stream_backlog("a", "b") == 0 and sim.metrics().dropped["reset"] == 4
    sim.schedule(0.5, lambda s: s.heal())
    _send(sim, "a", "b", 5, at=0.5)
    sim.run_until(3.0)
    assert _got(sim, "b") == [(_arrival(0.5), 5)]  # not held for the old link's retry at 0.6

    # messages already on the wire die with the connection too
    sim.set_link("a", "b", latency=0.5)
    _send(sim, "a", "b", 6, 7, 8)
    sim.run_for(0.1)
    assert sim.stream_backlog("a", "b") == 3
    assert sim.reset_stream("a", "b") == 3 and sim.reset_stream("b", "a") == 0
    _send(sim, "a", "b", 9)
    sim.run_for(1.0)
    assert [k for _, k in _got(sim, "b")] == [5, 9]
    assert sim.metrics().dropped["reset"] == 7
    assert [e[3] for e in sim.trace if e[1] == "reset_stream"] == [("b", 4), ("b", 3), ("a", 0)]


def test_a_cores_reset_effects_apply_once_each_before_what_it_sends_next():
    sim = _sim(4)
    sim.partition(["a"])
    _send(sim, "a", "b", 1, 2)
    sim.call("a", lambda core, now: [ResetStream("b"), ResetStream("c"), ResetStream("b")])
    assert sim.stream_backlog("a", "b") == 2  # nothing sent yet: the backlog is still there
    sim.call("a", lambda core, now: [*_syncs("a", "b", [3]), ResetStream("b")])
    assert [e[3] for e in sim.trace if e[1] == "reset_stream"] == [("b", 2), ("c", 0)]
    assert sim.stream_backlog("a", "b") == 1  # the new message, on a fresh stream
    sim.heal()
    sim.run_for(1.0)
    assert [k for _, k in _got(sim, "b")] == [3]


def test_reset_effects_are_ignored_without_stream_resets():
    sim = _sim(4, streams=StreamConfig(resets=False))
    sim.partition(["a"])
    _send(sim, "a", "b", 1)
    sim.call("a", lambda core, now: [ResetStream("b"), *_syncs("a", "b", [2])])
    assert sim.stream_backlog("a", "b") == 2


def test_crash_loses_a_streams_backlog_and_a_restarted_node_gets_none_of_it():
    sim = _sim(6)
    sim.set_link("a", "b", latency=0.5)
    _send(sim, "a", "b", 1, 2)  # in flight
    sim.partition(["a"], ["b"])  # c, unlisted, is cut off from both
    _send(sim, "a", "c", 1, 2, 3)  # queued behind the partition
    _send(sim, "c", "a", 1)
    sim.run_for(0.1)
    sim.crash("b")
    sim.crash("c")
    assert sim.metrics().dropped["crashed"] == 2 + 3 + 1
    assert sim.stream_backlog("a", "b") == sim.stream_backlog("a", "c") == 0
    sim.heal()
    _send(sim, "a", "c", 4)  # to the dead process, still in flight when a new one starts
    sim.run_for(0.005)
    sim.add_node("c", Recorder("c"))  # restarted at the same address, with fresh connections
    _send(sim, "a", "c", 5)
    sim.run_for(2.0)
    assert _got(sim, "c") == [(_arrival(0.105), 5)] and _got(sim, "a") == []
    assert sim.metrics().dropped["crashed"] == 7


def test_streams_carry_encoded_messages():
    sim = _sim(2, loss=0.3, encode_messages=True)
    _send(sim, "a", "b", *range(1, 21))
    sim.run_for(3000.0)
    assert [k for _, k in _got(sim, "b")] == list(range(1, 21))
    m = sim.metrics()
    assert m.bytes_sent == m.bytes_delivered > 0 and m.dropped_total == 0


# ------------------------------------------------------------------ datagrams and determinism


def _flood(seed: int, streams: bool) -> Simulator:
    sim = Simulator(seed, NetworkModel(loss=0.05, streams=streams))
    addrs = flood_cluster(sim, 20, seed, period=0.05, fanout=2)
    sim.run_until(0.5)
    sim.partition(addrs[:5])
    sim.run_until(1.0)
    sim.heal()
    sim.run_until(1.5)
    return sim


def test_datagram_traffic_is_untouched_by_streams():
    off, on = _flood(8, streams=False), _flood(8, streams=True)
    assert off.metrics().dropped["loss"] > 50 and off.metrics().dropped["partition"] > 50
    assert on.fingerprint() == off.fingerprint()  # pings and acks only: the same run


def _mixed(seed: int, streams: bool = True) -> Simulator:
    sim = Simulator(seed, NetworkModel(loss=0.2, streams=streams), trace_messages=True)
    addrs = flood_cluster(sim, 10, seed, period=0.05)
    rng = random.Random(f"{seed}:driver")
    for i in range(300):
        src, dst = rng.sample(addrs, 2)
        sim.schedule(i * 0.01, lambda s, src=src, dst=dst, i=i: s.call(
            src, lambda core, now: _syncs(src, dst, [i])))  # fmt: skip
    sim.schedule(0.5, lambda s: s.partition(addrs[:3]))
    sim.schedule(1.0, lambda s: s.reset_stream(addrs[0], addrs[5]))
    sim.schedule(1.5, lambda s: s.crash(addrs[9]))
    sim.schedule(2.0, lambda s: s.heal())
    sim.run_until(10.0)
    return sim


def test_same_seed_same_fingerprint():
    a, b, c = _mixed(21), _mixed(21), _mixed(22)
    assert a.trace == b.trace and a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != c.fingerprint()
    assert a.fingerprint() != _mixed(21, streams=False).fingerprint()
    assert a.metrics().delivered > 1000


# ------------------------------------------------------------------ configuration


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"rto_min": 0.0}, "rto_min must be a finite number > 0"),
        ({"rto_min": -0.2}, "rto_min must be a finite number > 0"),
        ({"rto_max": math.inf}, "rto_max must be a finite number > 0"),
        ({"rto_min": "0.2"}, "rto_min must be a number of seconds"),
        ({"rto_min": 1.0, "rto_max": 0.5}, r"rto_max \(0.5\) must be >= rto_min \(1.0\)"),
        ({"buffer": 0}, "buffer must be an integer >= 1"),
        ({"buffer": 2.5}, "buffer must be an integer >= 1"),
        ({"buffer": True}, "buffer must be an integer >= 1"),
        ({"retries": -1}, "retries must be an integer >= 0"),
    ],
)
def test_bad_stream_config_is_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        StreamConfig(**kw)


def test_set_streams_accepts_only_a_flag_or_a_config():
    net = NetworkModel()
    assert net.streams is None  # off by default
    net.set_streams(True)
    assert net.streams == StreamConfig(rto_min=0.2, rto_max=120.0, buffer=64, retries=15)
    net.set_streams(StreamConfig(buffer=8))
    assert net.streams.buffer == 8
    net.set_streams(False)
    assert net.streams is None
    for bad in (1, "yes", None, {"buffer": 8}):
        with pytest.raises(ValueError, match="streams must be True, False or a StreamConfig"):
            net.set_streams(bad)


# ------------------------------------------------------------------ clusters


def test_cluster_builders_turn_streams_on_only_when_asked():
    assert PlacementCluster(2, 1).sim.network.streams is None
    assert PlacementCluster(2, 1, streams=True).sim.network.streams == StreamConfig()
    sim = Simulator(1)
    bootstrap_swim_cluster(sim, 3, 1)
    assert sim.network.streams is None
    bootstrap_swim_cluster(Simulator(1), 3, 1, streams=StreamConfig(buffer=8))
    sim = Simulator(1)
    build_swim_cluster(sim, 3, 1, streams=StreamConfig(buffer=8))
    assert sim.network.streams == StreamConfig(buffer=8)


def test_swim_cluster_joins_over_lossy_streams_and_detects_a_crash():
    sim = Simulator(9, NetworkModel(loss=0.1))
    addrs = build_swim_cluster(sim, 8, 9, streams=True)
    assert sim.run_until_true(lambda: converged(sim, addrs), timeout=30) is not None
    sim.crash(addrs[3])
    dead = sim.run_until_true(
        lambda: all(view_of(sim, a)["n3"] == Status.DEAD for a in addrs if sim.is_up(a)),
        timeout=30,
    )
    assert dead is not None
    assert sim.metrics().dropped["loss"] > 0  # datagrams were lost; the joins' syncs were not

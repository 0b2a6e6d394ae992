"""The membership core driven by hand: precedence rules, refutation, Lifeguard timers, resources."""

from __future__ import annotations

import dataclasses
import random

import pytest

from gossip.broadcast import BroadcastQueue
from gossip.config import SwimConfig
from gossip.effects import Outgoing, ResetStream, StatusChange
from gossip.membership import GEN_SHIFT, Membership
from gossip.messages import (
    Ack,
    Gossip,
    GossipOnly,
    MemberUpdate,
    Message,
    Ping,
    ResourceRecord,
    Status,
)

CFG = SwimConfig()


def _core(n_known: int = 0, node: str = "me") -> Membership:
    core = Membership(node, f"tcp://{node}:1", random.Random(0), CFG)
    core.join(0.0, [])
    ups = tuple(MemberUpdate(f"p{i}", f"tcp://p{i}:1", 0, Status.ALIVE) for i in range(n_known))
    core.on_message(0.0, _gossip("p0", *ups))
    return core


def _gossip(sender: str, *members: MemberUpdate, resources=()) -> Message:
    return Message(sender, f"tcp://{sender}:1", 0, GossipOnly(Gossip(members, tuple(resources))))


def _sends(effects) -> list[Outgoing]:
    return [e for e in effects if isinstance(e, Outgoing)]


def _resets(effects) -> list[str]:
    return [e.addr for e in effects if isinstance(e, ResetStream)]


def _changes(effects) -> list[StatusChange]:
    return [e for e in effects if isinstance(e, StatusChange)]


def _all_gossip(outs) -> list[MemberUpdate]:
    found = []
    for o in _sends(outs):
        g = getattr(o.msg.body, "gossip", None)
        if g:
            found.extend(g.members)
    return found


def test_suspicion_about_self_is_refuted_with_higher_incarnation():
    core = _core(5)
    core.on_message(1.0, _gossip("p1", MemberUpdate("me", "tcp://me:1", 0, Status.SUSPECT, "p1")))
    assert core.incarnation == 1
    assert core.awareness == 1  # being suspected counts against our own health
    outs = core.on_tick(core.next_wakeup() + 1.0)
    mine = [u for u in _all_gossip(outs) if u.node == "me"]
    assert mine and mine[0].status == Status.ALIVE and mine[0].incarnation == 1


def test_precedence_of_updates():
    core = _core(3)
    up = lambda st, inc, by="": _gossip("p2", MemberUpdate("p1", "tcp://p1:1", inc, st, by))  # noqa: E731
    core.on_message(1, up(Status.SUSPECT, 0, "p2"))
    assert core.member("p1").status == Status.SUSPECT
    core.on_message(1, up(Status.ALIVE, 0))  # same incarnation alive does not clear suspicion
    assert core.member("p1").status == Status.SUSPECT
    core.on_message(1, up(Status.ALIVE, 1))  # refutation
    assert core.member("p1").status == Status.ALIVE and core.member("p1").incarnation == 1
    core.on_message(1, up(Status.DEAD, 0, "p2"))  # stale
    assert core.member("p1").status == Status.ALIVE
    core.on_message(1, up(Status.DEAD, 1, "p2"))
    assert core.member("p1").status == Status.DEAD
    core.on_message(1, up(Status.SUSPECT, 1, "p0"))  # suspect never downgrades dead
    assert core.member("p1").status == Status.DEAD
    core.on_message(1, up(Status.LEFT, 2))
    assert core.member("p1").status == Status.LEFT
    core.on_message(1, up(Status.ALIVE, 2))  # a left node stays left at that incarnation
    assert core.member("p1").status == Status.LEFT
    core.on_message(1, _gossip("p2", MemberUpdate("ghost", "tcp://g:1", 5, Status.DEAD, "p2")))
    assert core.member("ghost") is None  # a failure of a stranger teaches nothing


def test_suspicion_timeout_shrinks_with_independent_confirmations():
    core = _core(20)
    n = core.live_count()
    lo, hi = CFG.suspicion_bounds(n)

    def suspect(by: str, t: float) -> None:
        core.on_message(t, _gossip(by, MemberUpdate("p5", "tcp://p5:1", 0, Status.SUSPECT, by)))

    suspect("p1", 10.0)
    t_one = core._suspicions["p5"].deadline()
    assert abs(t_one - (10.0 + hi)) < 1e-9
    suspect("p1", 10.5)  # the same accuser again is not independent
    assert core._suspicions["p5"].deadline() == t_one
    for i, by in enumerate(["p2", "p3", "p4"]):
        suspect(by, 11.0 + i)
    assert abs(core._suspicions["p5"].deadline() - (10.0 + lo)) < 1e-9
    core.on_tick(10.0 + lo + 0.01)
    assert core.member("p5").status == Status.DEAD


def test_failed_probes_raise_awareness_and_stretch_the_probe_interval():
    core = _core(8)
    t = 0.0
    for _ in range(200):  # nobody ever answers: every probe fails
        t = core.next_wakeup()
        core.on_tick(t)
        if core.awareness >= 3:
            break
    assert core.awareness >= 3
    # a successful probe lowers it again
    ping = None
    while ping is None:
        t = core.next_wakeup()
        ping = next((o for o in _sends(core.on_tick(t)) if isinstance(o.msg.body, Ping)), None)
    before = core.awareness
    assert core._probe.deadline - t == pytest.approx(CFG.probe_interval * (before + 1))  # stretched
    core.on_message(t + 0.01, Message(ping.msg.body.target, ping.addr, ping.msg.seq,
                                      Ack(ping.msg.body.target)))  # fmt: skip
    assert core.awareness == before - 1
    assert core.stats["probe_failed"] > 0


def test_leave_announces_left_with_higher_incarnation_and_stops_probing():
    core = _core(4)
    outs = core.leave(1.0)
    assert core.left and core.incarnation == 1
    ups = _all_gossip(outs)
    assert ups and all(u.node == "me" and u.status == Status.LEFT for u in ups)
    later = core.on_tick(core.next_wakeup())
    assert not any(isinstance(o.msg.body, Ping) for o in _sends(later))
    # after leaving, accusations are not refuted
    core.on_message(2.0, _gossip("p1", MemberUpdate("me", "tcp://me:1", 1, Status.DEAD, "p1")))
    assert core.incarnation == 1


def test_resource_records_newer_version_wins_and_own_record_is_authoritative():
    core = _core(2)
    r5 = ResourceRecord(node="p1", version=5, cpus=8)
    core.on_message(1, _gossip("p1", resources=[r5]))
    core.on_message(1, _gossip("p1", resources=[ResourceRecord(node="p1", version=4, cpus=1)]))
    assert core.member("p1").resources.cpus == 8
    core.on_message(1, _gossip("p1", resources=[ResourceRecord(node="me", version=99, cpus=1)]))
    # a copy of our record we never wrote: our content stays, at a version that outranks it
    assert core.resources.version == 100 and core.resources.cpus == 0
    core.update_resources(2.0, load=0.5, forecast=[0.1, 0.2])
    assert core.resources.version == 101 and core.resources.forecast == (0.1, 0.2)


def test_ping_is_acked_and_indirect_probe_is_relayed():
    core = _core(3)
    outs = core.on_message(1.0, Message("p1", "tcp://p1:1", 9, Ping("me")))
    assert [(o.addr, type(o.msg.body), o.msg.seq) for o in outs] == [("tcp://p1:1", Ack, 9)]
    from gossip.messages import Nack, PingReq

    outs = core.on_message(1.0, Message("p1", "tcp://p1:1", 10, PingReq("p2", "tcp://p2:1")))
    (fwd,) = outs
    assert fwd.addr == "tcp://p2:1" and isinstance(fwd.msg.body, Ping)
    relayed = core.on_message(1.05, Message("p2", "tcp://p2:1", fwd.msg.seq, Ack("p2")))
    assert [(o.addr, type(o.msg.body), o.msg.seq) for o in relayed] == [("tcp://p1:1", Ack, 10)]
    # an unanswered relay sends a nack to the requester
    outs = core.on_message(2.0, Message("p1", "tcp://p1:1", 11, PingReq("p0", "tcp://p0:1")))
    nacks = [o for o in _sends(core.on_tick(2.0 + CFG.probe_timeout))
             if isinstance(o.msg.body, Nack)]  # fmt: skip
    assert [(o.addr, o.msg.seq) for o in nacks] == [("tcp://p1:1", 11)]


def test_broadcast_queue_limits_transmissions_and_replaces_stale_items():
    q = BroadcastQueue()
    q.put("a", 1)
    q.put("b", 2)
    q.put("a", 3)  # replaces 1
    assert len(q) == 2
    sent = [q.take(10, limit=3) for _ in range(4)]
    assert sent[0] == [2, 3] or sent[0] == [3, 2]
    assert [len(s) for s in sent] == [2, 2, 2, 0]
    q.put("c", 4)
    q.put("d", 5)
    q.take(1, limit=5)  # d (newest) goes first
    assert q.take(1, limit=5) == [4]  # then the least transmitted


def test_a_restarted_node_at_a_new_address_overrides_its_old_life():
    core = _core(3)
    old_life = MemberUpdate("me", "tcp://old-address:1", 0, Status.ALIVE)
    core.on_message(1.0, _gossip("p1", old_life))
    assert core.incarnation == 1  # peers will now prefer our current address
    peer = _core(3, node="p0")
    peer.on_message(1.0, _gossip("p1", old_life))
    peer.on_message(2.0, _gossip("p1", MemberUpdate("me", "tcp://me:1", 1, Status.ALIVE)))
    assert peer.member("me").addr == "tcp://me:1"


# ---------------------------------------------------------------------- generations (restarts)

GEN1 = 1 << GEN_SHIFT


def test_a_new_generation_of_a_live_member_is_a_crash_then_a_new_life_after_a_quarantine():
    core = _core(4)
    seen = core.on_message(1.0, _gossip("p2", MemberUpdate("p1", "tcp://p1:1", GEN1,
                                                            Status.ALIVE)))  # fmt: skip
    assert core.status_of("p1") == Status.DEAD and "p1" not in core.live_nodes()
    assert core.stats["restarts_seen"] == 1
    # more news of the new life during the quarantine changes nothing yet
    seen += core.on_message(1.1, _gossip("p3", MemberUpdate("p1", "tcp://p1:1", GEN1 + 1,
                                                             Status.ALIVE)))  # fmt: skip
    assert core.status_of("p1") == Status.DEAD
    assert core.next_wakeup() <= 1.0 + CFG.probe_interval
    seen += core.on_tick(1.0 + CFG.probe_interval)
    assert core.status_of("p1") == Status.ALIVE and core.member("p1").incarnation == GEN1 + 1
    assert [(c.status, c.incarnation) for c in _changes(seen) if c.node == "p1"] == [
        (Status.DEAD, 0), (Status.ALIVE, GEN1 + 1)]  # fmt: skip


def test_refutations_within_a_generation_are_not_restarts():
    core = _core(4)
    core.on_message(1.0, _gossip("p2", MemberUpdate("p1", "tcp://p1:1", 5, Status.ALIVE)))
    assert core.status_of("p1") == Status.ALIVE and core.stats["restarts_seen"] == 0


def test_a_new_generation_of_a_dead_member_comes_back_at_once():
    core = _core(4)
    core.on_message(1.0, _gossip("p2", MemberUpdate("p1", "tcp://p1:1", 0, Status.DEAD, "p2")))
    core.on_message(1.5, _gossip("p2", MemberUpdate("p1", "tcp://p1:1", GEN1, Status.ALIVE)))
    assert core.status_of("p1") == Status.ALIVE and core.stats["restarts_seen"] == 0


def test_the_new_life_reported_dead_during_its_quarantine_stays_dead():
    core = _core(4)
    core.on_message(1.0, _gossip("p2", MemberUpdate("p1", "tcp://p1:1", GEN1, Status.ALIVE)))
    core.on_message(1.1, _gossip("p3", MemberUpdate("p1", "tcp://p1:1", GEN1, Status.DEAD, "p3")))
    core.on_tick(5.0)
    assert core.status_of("p1") == Status.DEAD


def test_a_restarted_node_outranks_its_old_life_and_its_old_record():
    me = Membership("me", "tcp://me:1", random.Random(0), CFG,
                    ResourceRecord("me", 0, cpus=8.0), generation=3)  # fmt: skip
    assert me.incarnation == 3 << GEN_SHIFT
    assert me.resources.version == (3 << GEN_SHIFT) + 1 and me.resources.cpus == 8.0
    with pytest.raises(ValueError):
        Membership("x", "tcp://x:1", random.Random(0), CFG, generation=-1)


def test_own_record_echoed_back_is_no_news() -> None:
    """Gossip carries a node's own record back to it all the time; treating the echo (same
    version, same contents) as a forgery to outrank republished every record on every echo
    and doubled the gossip (only a different copy at our version, or a higher one, is)."""
    from gossip.messages import Gossip, GossipOnly, Message

    a = Membership("a", "sim://a", random.Random(1), SwimConfig())
    a.join(0.0, [])
    mine = a.resources
    a.on_message(1.0, Message("b", "sim://b", 1, GossipOnly(Gossip((), (mine,)))))
    assert a.resources == mine and a.stats["record_refuted"] == 0
    forged = dataclasses.replace(mine, cpus=mine.cpus + 1)
    a.on_message(2.0, Message("b", "sim://b", 2, GossipOnly(Gossip((), (forged,)))))
    assert a.resources.version == mine.version + 1 and a.resources.cpus == mine.cpus


def test_streams_to_members_just_suspected_or_failed_are_to_be_reset_once():
    """The shells close their stream to such a member (issue 12: its backlog, delivered once it
    was reachable again, re-accused live nodes after a heal)."""
    core = _core(4)
    up = lambda node, st, inc=0: _gossip("p0", MemberUpdate(node, f"tcp://{node}:1", inc, st, "p0"))  # noqa: E731
    assert _resets(core.on_message(0.5, up("p9", Status.ALIVE))) == []  # joins are no reason
    assert _resets(core.on_message(1.0, up("p1", Status.SUSPECT))) == ["tcp://p1:1"]
    assert _resets(core.on_message(1.1, up("p1", Status.SUSPECT))) == []  # no news: no reset
    both = _gossip("p0", *(MemberUpdate(n, f"tcp://{n}:1", 0, Status.DEAD, "p0")
                           for n in ("p2", "p3", "p2")))  # fmt: skip
    assert _resets(core.on_message(1.2, both)) == ["tcp://p2:1", "tcp://p3:1"]  # once each
    assert _resets(core.on_message(1.3, up("p1", Status.DEAD))) == ["tcp://p1:1"]  # again
    refuted = core.on_message(1.4, up("p3", Status.ALIVE, 1))
    assert _resets(refuted) == [] and _changes(refuted)  # a refutation is no reason


def test_effects_come_as_resets_then_messages_then_status_changes():
    """The order a shell carries them out in: a stream is reset before anything is sent on it
    (the reset would drop it), and the changes a call saw after what it sent."""
    core = _core(6)
    seen = 0
    for _ in range(60):  # nobody answers: probes fail, suspicions and failures follow
        effects = core.on_tick(core.next_wakeup())
        kinds = [type(e) for e in effects]
        order = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
        assert order in ([], [ResetStream], [Outgoing], [StatusChange],
                         [ResetStream, Outgoing], [ResetStream, StatusChange],
                         [Outgoing, StatusChange], [ResetStream, Outgoing, StatusChange]), kinds
        seen += ResetStream in kinds and StatusChange in kinds
    assert seen


def test_a_member_held_failed_that_speaks_is_told_so_at_most_once_a_probe_interval():
    """After a partition heals, only this lets a node learn the other side declared it dead
    and refute at once (issue 12), instead of waiting for news that has stopped spreading."""
    core = _core(4)
    core.on_message(1.0, _gossip("p0", MemberUpdate("p1", "tcp://p1:1", 0, Status.DEAD, "p0")))
    told = lambda outs: [u for o in outs if o.addr == "tcp://p1:1"  # noqa: E731
                         for u in getattr(o.msg.body, "gossip", Gossip()).members
                         if u.node == "p1"]  # fmt: skip
    first = core.on_message(2.0, _gossip("p1"))
    assert [(u.status, u.incarnation) for u in told(first)] == [(Status.DEAD, 0)]
    assert told(core.on_message(2.1, _gossip("p1"))) == []  # not again within the interval
    later = 2.0 + CFG.probe_interval
    assert [u.status for u in told(core.on_message(later, _gossip("p1")))] == [Status.DEAD]
    # its refutation revives it, and it is no longer told anything
    core.on_message(later + 0.1, _gossip("p1", MemberUpdate("p1", "tcp://p1:1", 1, Status.ALIVE)))
    assert core.member("p1").status == Status.ALIVE
    assert told(core.on_message(later + 1.0, _gossip("p1"))) == []

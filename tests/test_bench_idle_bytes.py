"""The per-kind byte breakdown (`scenarios.bench.idle_bytes`, `scenarios.sim.meter`): what it
attributes adds up, it is deterministic, and it sees republished records where they travel."""

from __future__ import annotations

from gossip import wire
from gossip.messages import Gossip, MemberUpdate, Message, Ping, ResourceRecord, Status, SyncPush
from scenarios.bench import idle_bytes
from scenarios.sim.meter import measure

UPD = MemberUpdate("node1", "tcp://127.0.0.1:40001", 1 << 40, Status.ALIVE)
REC = ResourceRecord("node1", 1 << 40, cpus=2.0, memory=1 << 34, forecast=(0.5,) * 4)


def test_a_message_is_measured_as_encoded_and_its_contents_apportioned() -> None:
    for body in (Ping("node2", Gossip((UPD, UPD), (REC,))), SyncPush((UPD,), (REC, REC))):
        msg = Message("node0", "tcp://127.0.0.1:40000", 3, body)
        kb = measure(msg)
        assert kb.messages == 1 and kb.bytes == len(wire.encode(msg))
        assert 0 < kb.members and 0 < kb.records and kb.members + kb.records < kb.bytes
    bare = measure(Message("node0", "a", 0, Ping("node2")))
    assert bare.members == bare.records == 0


def test_the_breakdown_is_deterministic_and_finds_the_records() -> None:
    quiet = idle_bytes.breakdown(6, warmup=5.0, window=20.0, republish=0)
    again = idle_bytes.breakdown(6, warmup=5.0, window=20.0, republish=0)
    busy = idle_bytes.breakdown(6, warmup=5.0, window=20.0, republish=2.0)
    assert quiet == again
    assert {"Ping", "Ack", "Sync", "SyncReply"} <= set(quiet)
    assert sum(kb.records for kb in quiet.values()) == 0  # nothing changed, nothing to carry
    assert sum(kb.records for kb in busy.values()) > 0
    rows = idle_bytes.table(busy, 6, 20.0)
    assert rows[-1].startswith("| all |") and len(rows) == len(busy) + 3

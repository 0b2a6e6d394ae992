"""The wire format: round trips, limits, and a decoder that only ever raises WireError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gossip import wire
from gossip.messages import (
    PROTOCOL_VERSION,
    Ack,
    Gossip,
    GossipOnly,
    MemberUpdate,
    Message,
    Nack,
    Ping,
    PingReq,
    Query,
    QueryReply,
    ResourceRecord,
    Status,
    Sync,
    SyncReply,
)

REC = ResourceRecord(
    node="n1", version=7, cpus=4.0, memory=8 << 30, gpus=1, labels={"zone": "eu"},
    alloc_cpus=1.5, alloc_memory=1 << 30, alloc_gpus=0, load=0.25, mem_load=0.5,
    forecast=(0.2, 0.3, 0.4),
)  # fmt: skip
UPD = MemberUpdate("n2", "tcp://10.0.0.2:7946", 3, Status.SUSPECT, by="n1")
G = Gossip((UPD,), (REC,))

BODIES = [
    Ping("n2", G),
    Ack("n2", G),
    PingReq("n3", "tcp://10.0.0.3:7946", G),
    Nack("n3"),
    Sync((UPD,), (REC,), join=True),
    SyncReply((UPD,), (REC,)),
    GossipOnly(G),
    Query("members", {"x": 1}),
    QueryReply(True, [{"node": "n1"}], ""),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_round_trip(body):
    msg = Message("n1", "tcp://10.0.0.1:7946", 42, body)
    assert wire.decode(wire.encode(msg)) == msg


def _envelope(**over):
    fields = dict(v=PROTOCOL_VERSION, k=7, s="n1", a="tcp://x:1", q=0, b=[[[], []]])
    fields.update(over)
    return msgpack.packb([fields["v"], fields["k"], fields["s"], fields["a"], fields["q"],
                          fields["b"]])  # fmt: skip


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "undecodable"),
        (b"\xc1", "undecodable"),
        (msgpack.packb({"a": 1}), "malformed"),
        (_envelope(v=99), "wrong_version"),
        (_envelope(k=250), "unknown_kind"),
        (_envelope(k="ping"), "unknown_kind"),
        (_envelope(s=""), "malformed"),
        (_envelope(s=5), "malformed"),
        (_envelope(q=-1), "malformed"),
        (_envelope(b=[[[["n", "a", 0, 9, ""]], []]]), "malformed"),  # status out of range
        (_envelope(b=[[[["n", "a", -1, 0, ""]], []]]), "malformed"),  # negative incarnation
        (_envelope(b=[[[], [["n", 1, float("nan")] + [0] * 9]]]), "malformed"),
        (_envelope(b=[[[], []], "extra"]), "malformed"),
        (_envelope(b="notalist"), "malformed"),
        (b"\x91" * 5000 + b"\x90", "undecodable"),  # nesting deeper than the unpacker allows
        (b"\x00" * (wire.MAX_MESSAGE_BYTES + 1), "oversized"),
        (msgpack.packb([1, 7, "n1", "a", 0, [[[], []]]]) + b"\x00", "undecodable"),  # trailing
    ],
)
def test_bad_input_is_a_wire_error_with_a_reason(data, reason):
    with pytest.raises(wire.WireError) as e:
        wire.decode(data)
    assert e.value.reason == reason


def test_encode_refuses_oversized_messages():
    many = tuple(MemberUpdate(f"n{i}", "tcp://" + "h" * 200 + ":1", 0, Status.ALIVE)
                 for i in range(20_000))  # fmt: skip
    with pytest.raises(wire.WireError):
        wire.encode(Message("n1", "a", 0, Sync(many, ())))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_raise_anything_but_wire_error(data):
    try:
        wire.decode(data)
    except wire.WireError:
        pass


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(BODIES),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6),
    st.integers(0, 10_000),
)
def test_mutated_valid_messages_decode_or_raise_wire_error(body, flips, cut):
    data = bytearray(wire.encode(Message("n1", "tcp://a:1", 1, body)))
    for pos, val in flips:
        data[pos % len(data)] = val
    data = data[: max(1, len(data) - cut % 8)]
    try:
        msg = wire.decode(bytes(data))
    except wire.WireError:
        return
    assert isinstance(msg, Message)


json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=8),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 40), json_like)
def test_well_formed_msgpack_of_any_shape_is_validated(kind, body):
    try:
        wire.decode(msgpack.packb([PROTOCOL_VERSION, kind, "n1", "a", 0, body]))
    except wire.WireError:
        pass

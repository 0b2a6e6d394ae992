"""An agent survives garbage: every bad frame is counted by reason and it keeps answering.

The agent runs in-process (its own event loop in a thread) so hypothesis can throw many
inputs at it quickly; a real-process variant is in test_agent_cluster.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq
from agent_thread import AgentThread
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deploy.client import ClientError, query
from deploy.local_cluster import free_ports
from gossip.datagram import REFUSALS
from gossip.messages import (
    PROTOCOL_VERSION,
    Ack,
    Digest,
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
    SyncPush,
    SyncReply,
)
from gossip.wire import encode


@pytest.fixture(scope="module")
def target() -> Iterator[AgentThread]:
    t = AgentThread()
    query(t.addr, "stats", timeout=2.0)
    yield t
    t.stop()
    assert t.error is None, t.error


@pytest.fixture(scope="module")
def sender(target: AgentThread) -> Iterator[zmq.Socket]:
    ctx = zmq.Context()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(target.addr)
    yield s
    s.close()
    ctx.term()


def _accounted(stats: dict[str, Any]) -> int:
    """Frames the agent has fully dealt with: dropped by reason, refused (say, a protocol
    message from a client's name), queries, protocol messages, and datagrams the transport
    refused."""
    refused = sum(stats["transport"].get(k, 0) for k in REFUSALS)
    return stats["dropped_total"] + sum(stats["refused"].values()) + stats["agent"].get(
        "queries", 0) + stats["agent"].get("messages", 0) + refused


def _received(stats: dict[str, Any]) -> int:
    """Frames and datagrams received (a fuzzed member list can make the agent probe itself)."""
    t = stats["transport"]
    return t.get("received", 0) + t.get("datagrams_received", 0)


def _wait_received(addr: str, at_least: int, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        stats = query(addr, "stats", timeout=2.0)
        if stats["transport"].get("received", 0) >= at_least or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def test_each_kind_of_bad_frame_is_counted_by_reason(target: AgentThread,
                                                     sender: zmq.Socket) -> None:  # fmt: skip
    s = sender
    before = query(target.addr, "stats")
    good = encode(Message("x", "tcp://127.0.0.1:1", 1, Nack("y")))
    bad = {
        "undecodable": b"\xc1",
        "malformed": msgpack.packb([1, 2, 3]),
        "wrong_version": msgpack.packb([99, 1, "a", "b", 0, []]),
        "unknown_kind": msgpack.packb([PROTOCOL_VERSION, 250, "a", "b", 0, []]),
        "oversized": b"\x00" * (4 * 1024 * 1024 + 10),
    }
    for payload in bad.values():
        s.send(payload)
    s.send(good)
    s.send(encode(Message("x", "", 1, QueryReply(True, None, ""))))
    stats = _wait_received(target.addr, before["transport"]["received"] + 7 + 1)  # + this query
    for reason in ("undecodable", "malformed", "wrong_version", "unknown_kind", "oversized"):
        assert stats["dropped"].get(reason, 0) - before["dropped"].get(reason, 0) == 1, reason
    assert stats["dropped"].get("unexpected_reply", 0) >= 1
    assert stats["agent"]["messages"] > before["agent"].get("messages", 0)
    rows = query(target.addr, "members")
    assert [r["node"] for r in rows if r["status"] == "alive"][:1] == ["target"]
    # far beyond the limit, ZeroMQ itself refuses the frame (MAXMSGSIZE) and drops that
    # connection; the agent never sees it and keeps serving everyone else
    s.send(b"\x00" * (5 * 1024 * 1024))
    assert query(target.addr, "members")


def test_unknown_query_is_an_error_reply(target: AgentThread) -> None:
    with pytest.raises(ClientError, match="unknown query 'teapot'"):
        query(target.addr, "teapot")


def test_members_row_fields(target: AgentThread) -> None:
    (me,) = [r for r in query(target.addr, "members") if r["node"] == "target"]
    assert me["addr"] == target.addr and me["status"] == "alive"
    assert me["cpus"] == 2 and me["memory"] == 2**30
    for key in ("incarnation", "version", "gpus", "labels", "alloc", "load", "mem_load",
                "forecast", "last_heard_s_ago"):  # fmt: skip
        assert key in me


def test_set_labels_merges_and_bumps_the_record_version(target: AgentThread) -> None:
    (before,) = [r for r in query(target.addr, "members") if r["node"] == "target"]
    rep = query(target.addr, "set_labels", args={"labels": {"zone": "a", "disk": "ssd"}})
    assert rep["node"] == "target" and rep["version"] > before["version"]
    assert rep["labels"] == {"zone": "a", "disk": "ssd"}
    rep2 = query(target.addr, "set_labels", args={"labels": {"zone": "b"}})
    assert rep2["version"] > rep["version"]
    assert rep2["labels"] == {"zone": "b", "disk": "ssd"}  # merged, not replaced
    (me,) = [r for r in query(target.addr, "members") if r["node"] == "target"]
    assert me["labels"] == {"zone": "b", "disk": "ssd"} and me["version"] >= rep2["version"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ({}, "non-empty labels"),
        ({"labels": {}}, "non-empty labels"),
        ({"labels": ["zone"]}, "non-empty labels"),
        ({"labels": {"": "x"}}, "bad label key"),
        ({"labels": {"zone": 3}}, "bad value for label 'zone'"),
        ({"labels": {f"k{i}": "v" for i in range(65)}}, "too many labels"),
    ],
)
def test_set_labels_refuses_bad_arguments(target: AgentThread, args: dict, needle: str) -> None:
    with pytest.raises(ClientError, match=needle):
        query(target.addr, "set_labels", args=args)
    assert target.thread.is_alive()


# ---------------------------------------------------------------- hypothesis

ids = st.text(min_size=1, max_size=12)
addrs = st.sampled_from(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "nonsense", ""]) | ids
members = st.builds(MemberUpdate, ids, addrs.filter(bool), st.integers(0, 2**63 - 1),
                    st.sampled_from(list(Status)))  # fmt: skip
finite = st.floats(0, 1e6, allow_nan=False)
forecasts = st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=4).map(tuple)
records = st.builds(ResourceRecord, node=ids, version=st.integers(0, 2**63 - 1), cpus=finite,
                    memory=st.integers(0, 2**40), load=finite, forecast=forecasts)  # fmt: skip
digests = st.builds(Digest, ids, st.integers(0, 2**63 - 1), st.sampled_from(list(Status)),
                    st.integers(0, 2**63 - 1))  # fmt: skip
gossips = st.builds(Gossip, st.lists(members, max_size=3).map(tuple),
                    st.lists(records, max_size=2).map(tuple))  # fmt: skip
bodies = st.one_of(
    st.builds(Ping, ids, gossips), st.builds(Ack, ids, gossips),
    st.builds(PingReq, ids, addrs.filter(bool), gossips), st.builds(Nack, ids),
    st.builds(Sync, st.lists(digests, max_size=3).map(tuple), st.booleans()),
    st.builds(SyncReply, st.lists(members, max_size=3).map(tuple), st.just(()),
              st.lists(ids, max_size=3).map(tuple), st.lists(ids, max_size=3).map(tuple)),
    st.builds(SyncPush, st.lists(members, max_size=3).map(tuple),
              st.lists(records, max_size=2).map(tuple)),
    st.builds(GossipOnly, gossips),
    st.builds(Query, st.sampled_from(["members", "stats", "nope"]), st.just({})),
)  # fmt: skip
messages = st.builds(Message, ids.filter(lambda s: s != "target"), addrs,
                     st.integers(0, 2**32), bodies)  # fmt: skip


@st.composite
def payloads(draw: st.DrawFn) -> bytes:
    valid = encode(draw(messages))
    how = draw(st.sampled_from(["valid", "flip", "truncate", "splice", "random", "msgpack"]))
    if how == "valid":
        return valid
    if how == "flip":
        b = bytearray(valid)
        for i in draw(st.lists(st.integers(0, len(b) - 1), min_size=1, max_size=4)):
            b[i] = draw(st.integers(0, 255))
        return bytes(b)
    if how == "truncate":
        return valid[: draw(st.integers(0, len(valid) - 1))]
    if how == "splice":
        i = draw(st.integers(0, len(valid)))
        return valid[:i] + draw(st.binary(max_size=16)) + valid[i:]
    if how == "msgpack":  # structurally valid msgpack of the wrong shape
        obj = draw(st.recursive(
            st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8)
            | st.binary(max_size=8) | st.floats(),
            lambda kids: st.lists(kids, max_size=6)
            | st.dictionaries(st.text(max_size=4), kids, max_size=3),
            max_leaves=20,
        ))  # fmt: skip
        return msgpack.packb(obj, use_bin_type=True)
    return draw(st.binary(min_size=0, max_size=64))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(payloads(), min_size=1, max_size=20))
def test_fuzzed_frames_are_all_accounted_for_and_agent_keeps_answering(
    target: AgentThread, sender: zmq.Socket, batch: list[bytes]
) -> None:
    s = sender
    before = query(target.addr, "stats")["transport"].get("received", 0)
    for payload in batch:
        s.send(payload)
    stats = _wait_received(target.addr, before + len(batch) + 1)
    assert stats["transport"]["received"] >= before + len(batch) + 1
    # every received frame was dropped (by reason), answered as a query, or handled
    assert _accounted(stats) == _received(stats)
    rows = query(target.addr, "members")
    assert any(r["node"] == "target" and r["status"] == "alive" for r in rows)
    assert target.thread.is_alive() and target.error is None


def test_handler_exceptions_are_counted_not_fatal(target: AgentThread,
                                                  sender: zmq.Socket) -> None:  # fmt: skip
    s = sender
    core = target.agent.core
    original = core.on_message

    def broken(now: float, msg: Message) -> list:
        raise RuntimeError("core bug")

    core.on_message = broken  # type: ignore[method-assign]
    try:
        before = query(target.addr, "stats")["agent"].get("handler_errors", 0)
        s.send(encode(Message("x", "tcp://127.0.0.1:1", 1, Nack("y"))))
        deadline = time.monotonic() + 3
        while query(target.addr, "stats")["agent"].get("handler_errors", 0) == before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        core.on_message = original  # type: ignore[method-assign]
    assert query(target.addr, "members")


def test_agent_in_process_join_timeout() -> None:
    from agent.agent import JoinError

    seed = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    t = AgentThread(seeds=[seed], join_timeout=0.3)
    t.thread.join(5)
    assert isinstance(t.error, JoinError)
    assert f"could not reach any seed ({seed})" in str(t.error)

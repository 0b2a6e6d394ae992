"""Fault injection in the transport: strict rules, loss/blocked/delay on sends only, the file."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import random
from pathlib import Path

import pytest

from gossip.faults import FaultRules, FaultyTransport, RulesFile
from gossip.transport import Identity, Transport, ZmqTransport


class FakeTransport:
    """Records what is sent and replied; receives what a test queues."""

    def __init__(self) -> None:
        self.endpoint = "tcp://127.0.0.1:1"
        self.stats: collections.Counter[str] = collections.Counter()
        self.peer_count = 0
        self.sent: list[tuple[str, bytes]] = []
        self.replies: list[tuple[Identity, bytes]] = []
        self.datagrams: list[tuple[str, bytes]] = []
        self.resets: list[str] = []
        self.inbox: asyncio.Queue[tuple[Identity, bytes, str]] = asyncio.Queue()
        self.closed = False

    async def recv(self) -> tuple[Identity, bytes, str]:
        return await self.inbox.get()

    def reply(self, identity: Identity, payload: bytes) -> None:
        self.replies.append((identity, payload))

    def send(self, addr: str, payload: bytes) -> None:
        self.sent.append((addr, payload))
        self.stats["sent"] += 1

    def send_datagram(self, addr: str, payload: bytes) -> bool:
        self.datagrams.append((addr, payload))
        return True

    def serve_datagrams(self, handler) -> None:
        self.handler = handler

    def reset_peer(self, addr: str) -> None:
        self.resets.append(addr)

    def close(self) -> None:
        self.closed = True


A, B = "tcp://127.0.0.1:7001", "tcp://127.0.0.1:7002"


def test_both_transports_fit_the_seam() -> None:
    assert isinstance(FakeTransport(), Transport)
    assert isinstance(FaultyTransport(FakeTransport(), random.Random(0)), Transport)
    zt = ZmqTransport.bind("tcp://127.0.0.1:*")
    try:
        assert isinstance(zt, Transport)
    finally:
        zt.close()


# ---------------------------------------------------------------- rules


def test_rules_parse() -> None:
    r = FaultRules.from_json(json.dumps({"loss": 0.25, "delay": 1, "blocked": [A, B]}))
    assert r == FaultRules(0.25, 1.0, frozenset({A, B}))
    assert FaultRules.from_json("{}") == FaultRules()
    assert FaultRules.from_json(b'{"loss": 1}').loss == 1.0
    assert FaultRules.from_json('{"delay": 60}').delay == 60.0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "not JSON"),
        ("{", "not JSON"),
        ("[]", "JSON object"),
        ('"loss"', "JSON object"),
        ('{"lost": 0.1}', "unknown key 'lost'"),
        ('{"loss": "0.1"}', "loss: expected a number"),
        ('{"loss": true}', "loss: expected a number"),
        ('{"loss": NaN}', "loss"),
        ('{"loss": Infinity}', "loss"),
        ('{"loss": -0.1}', "loss"),
        ('{"loss": 1.5}', "0 to 1"),
        ('{"loss": 1e999}', "loss"),
        ('{"delay": -1}', "delay"),
        ('{"delay": 60.5}', "0 to 60"),
        ('{"delay": Infinity}', "delay"),
        ('{"delay": null}', "delay: expected a number"),
        (f'{{"blocked": "{A}"}}', "blocked: expected a list"),
        ('{"blocked": [1]}', "blocked"),
        ('{"blocked": [""]}', "blocked"),
        ('{"blocked": {"a": 1}}', "blocked"),
        (json.dumps({"blocked": [f"tcp://h:{i}" for i in range(4097)]}), "4096"),
        ("[" * 100_000, "not JSON"),
    ],
)
def test_bad_rules_are_one_line_errors(text: str, needle: str) -> None:
    with pytest.raises(ValueError) as e:
        FaultRules.from_json(text)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_rules_are_validated_when_built_directly() -> None:
    with pytest.raises(ValueError):
        FaultRules(loss=2.0)
    with pytest.raises(ValueError):
        FaultRules(delay=float("nan"))
    assert FaultRules(blocked=frozenset({A})).blocked == {A}


# ---------------------------------------------------------------- the wrapper


def test_blocked_and_loss_drop_sends_but_never_replies() -> None:
    inner = FakeTransport()
    ft = FaultyTransport(inner, random.Random(1))
    ft.send(A, b"1")
    ft.set_rules(FaultRules(blocked=frozenset({A})))
    for _ in range(10):
        ft.send(A, b"x")
        ft.send(B, b"y")
        ft.reply((b"id",), b"r")
    assert inner.sent == [(A, b"1")] + [(B, b"y")] * 10
    assert len(inner.replies) == 10
    ft.set_rules(FaultRules(loss=1.0))
    ft.send(B, b"z")
    ft.reply((b"id",), b"r")
    assert inner.sent[-1] == (B, b"y") and len(inner.replies) == 11
    ft.set_rules(FaultRules(loss=0.5))
    for _ in range(1000):
        ft.send(B, b"w")
    lost = ft.stats["fault_dropped_loss"] - 1
    assert 400 < lost < 600
    s = ft.stats
    assert s["fault_dropped_blocked"] == 10
    assert s["sent"] == len(inner.sent)  # the inner transport's counters are merged in
    ft.close()
    assert inner.closed


def test_delay_keeps_order_per_peer_and_is_cut_by_a_partition() -> None:
    async def scenario() -> tuple[FakeTransport, FaultyTransport, list[float]]:
        loop = asyncio.get_running_loop()
        inner = FakeTransport()
        ft = FaultyTransport(inner, random.Random(0), FaultRules(delay=0.2))
        t0 = loop.time()
        ft.send(A, b"a1")
        ft.send(B, b"b1")
        ft.set_rules(FaultRules(delay=0.05))  # lowered: a2 must still not overtake a1
        ft.send(A, b"a2")
        ft.reply((b"c",), b"now")  # never delayed
        assert inner.replies and not inner.sent
        await asyncio.sleep(0.1)
        assert inner.sent == []
        times: list[float] = []
        while len(inner.sent) < 3:
            await asyncio.sleep(0.01)
            times.append(loop.time() - t0)
        assert [p for a, p in inner.sent if a == A] == [b"a1", b"a2"]
        # a peer blocked while messages to it are held loses them
        ft.set_rules(FaultRules(delay=0.1))
        ft.send(A, b"a3")
        ft.set_rules(FaultRules(blocked=frozenset({A})))
        await asyncio.sleep(0.2)
        assert (A, b"a3") not in inner.sent
        # with no delay, later messages still queue behind held ones
        ft.set_rules(FaultRules(delay=0.1))
        ft.send(B, b"b2")
        ft.set_rules(FaultRules())
        ft.send(B, b"b3")
        assert inner.sent[-1] != (B, b"b3")
        await asyncio.sleep(0.2)
        assert inner.sent[-2:] == [(B, b"b2"), (B, b"b3")]
        return inner, ft, times

    inner, ft, times = asyncio.run(scenario())
    assert times[-1] >= 0.19
    assert ft.stats["fault_delayed"] == 6  # b3 too: held behind b2
    assert ft.stats["fault_dropped_blocked"] == 1


def test_delay_queue_is_bounded_and_dropped_at_close() -> None:
    async def scenario() -> FaultyTransport:
        inner = FakeTransport()
        ft = FaultyTransport(inner, random.Random(0), FaultRules(delay=5.0), max_held=10)
        for i in range(15):
            ft.send(A if i % 2 else B, b"%d" % i)
        ft.close()
        await asyncio.sleep(0)
        assert inner.sent == [] and inner.closed
        ft.send(A, b"after close")
        return ft

    ft = asyncio.run(scenario())
    s = ft.stats
    held = (s["fault_delayed"], s["fault_dropped_overflow"], s["fault_dropped_closed"])
    assert held == (10, 5, 10)


def test_recv_passes_through() -> None:
    async def scenario() -> tuple[Identity, bytes, str]:
        inner = FakeTransport()
        ft = FaultyTransport(inner, random.Random(0), FaultRules(loss=1.0))
        inner.inbox.put_nowait(((b"x",), b"payload", "key"))
        return await ft.recv()

    assert asyncio.run(scenario()) == ((b"x",), b"payload", "key")


# ---------------------------------------------------------------- the rules file


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # atomic, as a runner should write it


def test_rules_file_reload_missing_and_invalid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rules.json"
    rf = RulesFile(path)
    assert rf.poll() is None and rf.rules == FaultRules()  # missing = no faults
    _write(path, f'{{"blocked": ["{A}"], "loss": 0.1}}')
    assert rf.poll() == FaultRules(loss=0.1, blocked=frozenset({A}))
    assert rf.poll() is None  # unchanged
    _write(path, '{"delay": 0.5}')
    assert rf.poll() == FaultRules(delay=0.5)
    with caplog.at_level(logging.WARNING, logger="gossip.faults"):
        _write(path, '{"delay": 99}')
        assert rf.poll() is None
        assert rf.poll() is None  # the same bad file: warned once
    assert rf.rules == FaultRules(delay=0.5) and rf.errors == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "delay" in warnings[0] and "keeping" in warnings[0]
    _write(path, "not json")
    assert rf.poll() is None and rf.errors == 2
    path.unlink()
    assert rf.poll() == FaultRules()  # removed: faults end
    path.mkdir()
    assert rf.poll() is None and rf.errors == 3  # unreadable: an error, never raised
    path.rmdir()
    path.write_bytes(b"\xff\xfe\x00garbage")
    assert rf.poll() is None and rf.errors == 4
    path.write_bytes(b" " * (1 << 20) + b"{}")
    assert rf.poll() is None and rf.errors == 5

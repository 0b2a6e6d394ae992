"""Datagrams: framing and sealing (`gossip.datagram`), and the transport's UDP path."""

from __future__ import annotations

import asyncio
import secrets
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deploy.local_cluster import free_ports
from gossip.auth import Keyring, Verifier, node_curve_keys
from gossip.datagram import (
    MAX_DATAGRAM_BYTES,
    SEALED_OVERHEAD,
    DatagramCodec,
    DatagramError,
    fits,
    udp_target,
)
from gossip.transport import BindError, ZmqTransport


def _codec(ring: Keyring, node: str) -> DatagramCodec:
    return DatagramCodec(node_curve_keys(ring, node).datagram_keys())


def test_plain_round_trip_and_modes_are_not_mixed() -> None:
    plain = DatagramCodec()
    assert plain.open(plain.seal(b"ping")) == (b"ping", "")
    keyed = _codec(Keyring.generate(), "n1")
    with pytest.raises(DatagramError) as e:
        keyed.open(plain.seal(b"ping"))
    assert e.value.reason == "datagram_plain"
    with pytest.raises(DatagramError) as e:
        plain.open(keyed.seal(b"ping"))
    assert e.value.reason == "datagram_sealed"
    for bad, reason in ((b"", "datagram_empty"), (b"\x07abc", "datagram_bad_mode"),
                        (b"\x02" + b"x" * 10, "datagram_short")):  # fmt: skip
        with pytest.raises(DatagramError) as e:
            keyed.open(bad)
        assert e.value.reason == reason


def test_a_sealed_datagram_names_the_key_that_sealed_it_and_the_verifier_binds_it() -> None:
    ring = Keyring.generate()
    a, b = _codec(ring, "n1"), _codec(ring, "n2")
    data = a.seal(b"hello")
    assert b"hello" not in data  # encrypted, not only signed
    payload, key = b.open(data)
    assert payload == b"hello"
    verifier = Verifier(ring)
    assert verifier.principal("n1", key) is not None  # the key derived for n1...
    assert verifier.principal("n2", key) is None  # ...so it cannot speak as n2
    assert len(data) == len(b"hello") + SEALED_OVERHEAD


def test_tampered_forged_or_foreign_datagrams_do_not_open() -> None:
    ring = Keyring.generate()
    a, b = _codec(ring, "n1"), _codec(ring, "n2")
    data = bytearray(a.seal(b"hello world"))
    data[-3] ^= 0x01
    with pytest.raises(DatagramError) as e:
        b.open(bytes(data))
    assert e.value.reason == "datagram_unauthenticated"
    stranger = _codec(Keyring.generate(), "n1")  # another cluster's key
    with pytest.raises(DatagramError) as e:
        b.open(stranger.seal(b"hello"))
    assert e.value.reason == "datagram_unknown_key"
    # a datagram whose sender key was swapped for a member's: the box no longer opens
    good = a.seal(b"x")
    other = _codec(ring, "n3").seal(b"x")
    at = 1 + 4
    swapped = good[:at] + other[at:at + 32] + good[at + 32:]
    with pytest.raises(DatagramError) as e:
        b.open(swapped)
    assert e.value.reason == "datagram_unauthenticated"


def test_during_a_rotation_datagrams_sealed_with_either_key_open() -> None:
    old, new = secrets.token_bytes(32), secrets.token_bytes(32)
    still_old = _codec(Keyring((old, new)), "n1")  # not yet promoted the new key
    promoted = _codec(Keyring((new, old)), "n2")
    assert promoted.open(still_old.seal(b"a"))[0] == b"a"
    assert still_old.open(promoted.seal(b"b"))[0] == b"b"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_arbitrary_bytes_are_refused_with_a_reason_never_an_exception(data: bytes) -> None:
    for codec in (DatagramCodec(), _KEYED):
        try:
            codec.open(data)
        except DatagramError as e:
            assert e.reason.startswith("datagram_")


_KEYED = _codec(Keyring.generate(), "n9")


def test_size_limit_and_addresses() -> None:
    assert fits(b"x" * (MAX_DATAGRAM_BYTES - SEALED_OVERHEAD))
    assert not fits(b"x" * (MAX_DATAGRAM_BYTES - SEALED_OVERHEAD + 1))
    assert udp_target("tcp://10.0.0.1:7946") == ("10.0.0.1", 7946)
    assert udp_target("tcp://[::1]:7946") == ("::1", 7946)
    for bad in ("udp://1.2.3.4:1", "tcp://1.2.3.4", "tcp://:7", "tcp://h:0", "tcp://h:x",
                "tcp://h:70000"):  # fmt: skip
        assert udp_target(bad) is None


# ---------------------------------------------------------------- the transport's UDP path


async def _exchange(a: ZmqTransport, b: ZmqTransport, payloads: list[bytes]) -> list:
    got: list[tuple[bytes, str]] = []
    done = asyncio.Event()

    def on(payload: bytes, key: str) -> None:
        got.append((payload, key))
        if len(got) == len(payloads):
            done.set()

    b.serve_datagrams(on)
    for p in payloads:
        assert a.send_datagram(b.endpoint, p)
    await asyncio.wait_for(done.wait(), 2.0)
    return got


@pytest.mark.parametrize("keyed", [False, True])
def test_two_transports_exchange_datagrams_on_the_same_port_as_their_stream(keyed: bool) -> None:
    ring = Keyring.generate()

    async def main() -> None:
        ka = node_curve_keys(ring, "a") if keyed else None
        kb = node_curve_keys(ring, "b") if keyed else None
        a = ZmqTransport.bind("tcp://127.0.0.1:*", keys=ka)
        b = ZmqTransport.bind("tcp://127.0.0.1:*", keys=kb)
        try:
            got = await _exchange(a, b, [b"one", b"two"])
            assert sorted(p for p, _ in got) == [b"one", b"two"]
            keys = {k for _, k in got}
            assert keys == ({ka.dial[0][1].decode()} if keyed else {""})
            assert a.stats["datagrams_sent"] == 2 and b.stats["datagrams_received"] == 2
            assert a.send_datagram(b.endpoint, b"x" * MAX_DATAGRAM_BYTES) is False  # too big
            assert a.stats["datagram_too_big"] == 1
        finally:
            a.close()
            b.close()

    asyncio.run(main())


def test_garbage_on_the_udp_port_is_counted_and_the_rest_still_arrives() -> None:
    async def main() -> None:
        ring = Keyring.generate()
        b = ZmqTransport.bind("tcp://127.0.0.1:*", keys=node_curve_keys(ring, "b"))
        a = ZmqTransport.bind("tcp://127.0.0.1:*", keys=node_curve_keys(ring, "a"))
        raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            host, port = udp_target(b.endpoint)
            for junk in (b"", b"\x01plain", b"\x02" + secrets.token_bytes(100)):
                raw.sendto(junk, (host, port))
            got = await _exchange(a, b, [b"real"])
            assert got[0][0] == b"real"
            refused = sum(v for k, v in b.stats.items() if k.startswith("datagram_")
                          and k not in ("datagram_bytes_received",))  # fmt: skip
            assert refused >= 2  # the empty datagram may not even be delivered
            assert b.stats["datagram_plain"] == 1
        finally:
            raw.close()
            a.close()
            b.close()

    asyncio.run(main())


def test_a_taken_udp_port_is_a_clear_bind_error() -> None:
    port = free_ports(1)[0]
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("127.0.0.1", port))
    try:
        with pytest.raises(BindError, match=f"UDP port {port} already in use"):
            ZmqTransport.bind(f"tcp://127.0.0.1:{port}")
    finally:
        holder.close()


def test_reset_peer_drops_what_waits_for_it() -> None:
    async def main() -> None:
        a = ZmqTransport.bind("tcp://127.0.0.1:*")
        nobody = f"tcp://127.0.0.1:{free_ports(1)[0]}"  # nothing listens: messages wait
        try:
            for i in range(5):
                a.send(nobody, b"m%d" % i)
            await asyncio.sleep(0)  # sends leave at the end of the loop turn: now they wait
            assert a.peer_count == 1
            a.reset_peer(nobody)
            assert a.peer_count == 0
            assert a.stats["peers_reset"] == 1 and a.stats["dropped_timeout"] == 5
            a.reset_peer(nobody)  # nothing to reset: no error, not counted
            assert a.stats["peers_reset"] == 1
            a.send(nobody, b"late")  # not yet sent: dropped from the turn's outbox too
            a.reset_peer(nobody)
            await asyncio.sleep(0)
            assert a.stats["dropped_timeout"] == 6 and a.peer_count == 0
        finally:
            a.close()

    asyncio.run(main())


def test_a_probe_too_big_for_a_datagram_goes_alone_and_its_gossip_on_the_stream() -> None:
    """Only the probe's timing matters to failure detection: resource records that do not fit
    one datagram must not hold it back (nor be lost)."""
    from agent.agent import Agent, AgentOptions
    from agent.resources import Capacity
    from gossip.datagram import fits
    from gossip.effects import Outgoing
    from gossip.messages import Gossip, GossipOnly, Message, Ping, ResourceRecord
    from gossip.wire import decode

    class Fake:
        endpoint, stats, peer_count = "tcp://127.0.0.1:1", {}, 0

        def __init__(self) -> None:
            self.datagrams: list[bytes] = []
            self.sent: list[bytes] = []

        def send_datagram(self, addr: str, payload: bytes) -> bool:
            if not fits(payload):
                return False
            self.datagrams.append(payload)
            return True

        def send(self, addr: str, payload: bytes) -> None:
            self.sent.append(payload)

    fake = Fake()
    agent = Agent(AgentOptions(node_id="me", bind=fake.endpoint, advertise=fake.endpoint,
                               capacity=Capacity(cpus=1, memory=2**30)), fake)  # fmt: skip
    records = tuple(ResourceRecord(f"n{i}", 1, labels={"k": "v" * 40}) for i in range(30))
    small = Message("me", fake.endpoint, 7, Ping("n1"))
    big = Message("me", fake.endpoint, 8, Ping("n1", Gossip((), records)))
    agent._apply([Outgoing("tcp://127.0.0.1:2", small), Outgoing("tcp://127.0.0.1:2", big)])
    probes = [decode(d) for d in fake.datagrams]
    assert [(m.seq, m.body.gossip) for m in probes] == [(7, Gossip()), (8, Gossip())]
    [stream] = [decode(p) for p in fake.sent]
    assert stream.body == GossipOnly(Gossip((), records))
    assert agent.counters["gossip_split"] == 1

"""Datagram framing: how failure-detection messages travel as single UDP packets.

Why datagrams: SWIM assumes a probe or its ack is either on time or lost. Over a TCP stream a
lost segment turns into retransmission delay (with exponential backoff) and holds up everything
queued behind it, so under heavy silent loss acks arrived seconds late and live nodes were
declared failed; a partition left stale suspicions queued for a burst at the heal. memberlist
sends its probes over UDP for the same reason. Which messages ride datagrams is decided in
`gossip.kinds.rides_datagram`; this module only frames and protects them.

A datagram is one of:

- ``b"\\x01" + message``: a plain cluster (no keys), as unprotected as its ZeroMQ traffic;
- ``b"\\x02" + hint(4) + sender public key(32) + nonce(24) + box``: the encoded message sealed
  with NaCl's crypto_box (Curve25519, XSalsa20-Poly1305, the primitives ZeroMQ's CURVE uses)
  from the sender's own node keypair to the cluster's server key that `hint` names. Opening it
  proves the sender holds that node key's secret; who the key belongs to is then decided as for
  a ZeroMQ connection (`gossip.auth.Verifier`: the envelope's sender must be the node the key
  is derived for). Every server key of the ring is accepted, so a key rotation loses nothing.

A keyed agent refuses plain datagrams and a plain agent sealed ones. A replayed datagram is
harmless by construction of what rides them: acks answer one outstanding probe sequence number,
and membership news older than what a node knows is ignored.
"""

from __future__ import annotations

import collections
import hashlib
from dataclasses import dataclass

from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.utils import random as random_bytes
from zmq.utils import z85

PLAIN = 0x01
SEALED = 0x02
HINT_BYTES = 4
KEY_BYTES = 32
NONCE_BYTES = Box.NONCE_SIZE
MAC_BYTES = 16  # Poly1305
SEALED_OVERHEAD = 1 + HINT_BYTES + KEY_BYTES + NONCE_BYTES + MAC_BYTES
# The largest datagram sent: one Ethernet frame (1,500) less IPv4/IPv6 and UDP headers, with
# room to spare. A bigger one would be fragmented, and under loss a fragmented datagram is lost
# when any fragment is; the shell sends a message that does not fit on the stream instead.
MAX_DATAGRAM_BYTES = 1_400


# why a received datagram was refused: the transport counts each under its name
REFUSALS = ("datagram_empty", "datagram_plain", "datagram_bad_mode", "datagram_sealed",
            "datagram_short", "datagram_unknown_key", "datagram_unauthenticated")  # fmt: skip


def fits(payload: bytes) -> bool:
    """Whether `payload` goes in one datagram, sealed or not."""
    return len(payload) + SEALED_OVERHEAD <= MAX_DATAGRAM_BYTES


class DatagramError(Exception):
    """A datagram that cannot be opened: `reason` is a counter name, the message says why."""

    def __init__(self, reason: str, why: str) -> None:
        super().__init__(why)
        self.reason = reason


def _hint(server_public_z85: bytes) -> bytes:
    return hashlib.blake2b(server_public_z85, digest_size=HINT_BYTES).digest()


@dataclass(frozen=True, slots=True)
class DatagramKeys:
    """Seal with `own` (z85 public, z85 secret) to `server_public` (z85); open with any of
    `accept` (z85 server public, z85 server secret): every key of the cluster's ring."""

    own_public: bytes
    own_secret: bytes
    server_public: bytes
    accept: tuple[tuple[bytes, bytes], ...]


class DatagramCodec:
    """Frames payloads for UDP and back; with keys, seals and opens them. Not thread-safe."""

    def __init__(self, keys: DatagramKeys | None = None, cache_size: int = 4096) -> None:
        self.keys = keys
        self._boxes: collections.OrderedDict[tuple[bytes, bytes], Box] = (
            collections.OrderedDict())  # fmt: skip
        self._cache_size = cache_size
        self._send_box: Box | None = None
        self._send_prefix = b""
        self._accept: dict[bytes, PrivateKey] = {}
        if keys is not None:
            own_secret = PrivateKey(z85.decode(keys.own_secret))
            self._send_box = Box(own_secret, PublicKey(z85.decode(keys.server_public)))
            self._send_prefix = (bytes([SEALED]) + _hint(keys.server_public)
                                 + z85.decode(keys.own_public))  # fmt: skip
            self._accept = {_hint(pub): PrivateKey(z85.decode(sec)) for pub, sec in keys.accept}

    def seal(self, payload: bytes) -> bytes:
        if self._send_box is None:
            return bytes([PLAIN]) + payload
        nonce = random_bytes(NONCE_BYTES)
        return self._send_prefix + nonce + self._send_box.encrypt(payload, nonce).ciphertext

    def open(self, datagram: bytes) -> tuple[bytes, str]:
        """(payload, the sender's z85 public key or "" when plain); raises DatagramError."""
        if not datagram:
            raise DatagramError("datagram_empty", "an empty datagram")
        mode = datagram[0]
        if mode == PLAIN:
            if self.keys is not None:
                raise DatagramError("datagram_plain", "a plain datagram to a keyed agent")
            return datagram[1:], ""
        if mode != SEALED:
            raise DatagramError("datagram_bad_mode", f"unknown datagram mode {mode}")
        if self.keys is None:
            raise DatagramError("datagram_sealed", "a sealed datagram to a plain agent")
        if len(datagram) < SEALED_OVERHEAD:
            raise DatagramError("datagram_short", f"a sealed datagram of {len(datagram)} bytes")
        hint = datagram[1:1 + HINT_BYTES]
        at = 1 + HINT_BYTES
        public = datagram[at:at + KEY_BYTES]
        at += KEY_BYTES
        secret = self._accept.get(hint)
        if secret is None:
            raise DatagramError("datagram_unknown_key", "sealed to a key this agent does not hold")
        box = self._box(hint, secret, public)
        try:
            payload = box.decrypt(datagram[at + NONCE_BYTES:], datagram[at:at + NONCE_BYTES])
        except CryptoError:
            raise DatagramError("datagram_unauthenticated", "a datagram that does not open "
                                "(forged, corrupted, or a key this agent does not accept)"
                                ) from None  # fmt: skip
        return payload, z85.encode(public).decode()

    def _box(self, hint: bytes, secret: PrivateKey, public: bytes) -> Box:
        key = (hint, public)
        box = self._boxes.get(key)
        if box is None:  # a Curve25519 exchange costs ~50 us: once per sender, bounded
            box = Box(secret, PublicKey(public))
            self._boxes[key] = box
            if len(self._boxes) > self._cache_size:
                self._boxes.popitem(last=False)
        else:
            self._boxes.move_to_end(key)
        return box


def udp_target(addr: str) -> tuple[str, int] | None:
    """Where the agent bound at ``tcp://host:port`` receives datagrams: the same host and port.
    None for anything else (an address no datagram can go to)."""
    if not addr.startswith("tcp://"):
        return None
    host, sep, port = addr[6:].rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return None
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)

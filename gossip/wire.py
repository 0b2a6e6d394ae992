"""msgpack encoding of the message envelope, and the first checks of everything that arrives.

Envelope: a msgpack array ``[version, kind, sender_id, sender_addr, seq, body]`` where body is
the array its kind's encoder makes (`gossip.kinds`). `decode` enforces a byte limit, msgpack
container limits, the version and a registered kind, then hands the body to that kind's
decoder, which checks the exact shape and types of every field; anything else raises
`WireError`, which receivers count and drop. Nothing else may escape `decode`.

A kind is known here once the module registering it is imported: `gossip.messages` (imported
below) for the gossip layer's, `agent.messages` for placement and tasks.
"""

from __future__ import annotations

import msgpack

from gossip.fields import MAX_ITEMS, WireError, array, ident, integer, text
from gossip.kinds import kind_numbered
from gossip.messages import PROTOCOL_VERSION, Message

MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def encode(msg: Message) -> bytes:
    """Serialize one message. Raises WireError if the result would exceed the size limit."""
    kind = msg.kind
    out = msgpack.packb(
        [PROTOCOL_VERSION, kind.number, msg.sender, msg.sender_addr, msg.seq,
         kind.encode(msg.body)],
        use_bin_type=True,
    )  # fmt: skip
    if len(out) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(out)} bytes")
    return out


def decode(data: bytes) -> Message:
    """Parse and validate one message from untrusted bytes; raises only WireError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise WireError("malformed", "not bytes")
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"{len(data)} bytes")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
            max_str_len=MAX_MESSAGE_BYTES,
            max_bin_len=MAX_MESSAGE_BYTES,
            max_array_len=MAX_ITEMS,
            max_map_len=MAX_ITEMS,
            max_ext_len=0,
        )
    except Exception as e:  # msgpack raises many types (ExtraData, ValueError, StackError...)
        raise WireError("undecodable", type(e).__name__) from None
    if not isinstance(raw, list) or len(raw) != 6:
        raise WireError("malformed", "envelope is not a 6-element array")
    version, number, sender, sender_addr, seq, body = raw
    if version != PROTOCOL_VERSION:
        raise WireError("wrong_version", repr(version)[:32])
    kind = kind_numbered(number) if type(number) is int else None
    if kind is None:
        raise WireError("unknown_kind", repr(number)[:32])
    try:
        return Message(
            sender=ident(sender, "sender"),
            sender_addr=text(sender_addr, "sender_addr"),
            seq=integer(seq, "seq"),
            body=kind.decode(array(body, "body")),
        )
    except WireError:
        raise
    except (ValueError, TypeError) as e:  # wrong arity while unpacking a body array
        raise WireError("malformed", str(e)[:80]) from None

"""The message-kind registry: every kind is registered once, next to the code that owns it.

A registration says all that the layers carrying a kind need: its number on the wire, its body
class, how that body is encoded and decoded (the decoder validates untrusted input and raises
`WireError`), whether it rides a datagram or the peer's stream, and which core handles it. The
wire layer, both shells' routing and the node's dispatch read it here, so a new kind is one
registration beside its dataclass and codec, not an edit in each of them. A number or a body
class registered twice is refused at import, before it could send one byte.

Numbers are part of the protocol: never renumber.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# which core handles a kind (the registering package may name its own)
MEMBERSHIP = "membership"
CLIENT = "client"  # client requests: answered by the agent's shell, never by a core


class KindConflict(ValueError):
    """A kind whose number, name or body class is already registered."""


@dataclass(frozen=True, slots=True)
class Kind:
    number: int
    name: str  # as logs and docs name it, e.g. "PING_REQ"
    body: type
    encode: Callable[[Any], list]  # body -> its msgpack array
    decode: Callable[[list], Any]  # untrusted array -> body; raises WireError (or Value/TypeError)
    handler: str  # the core that handles it (MEMBERSHIP, CLIENT, or its package's own)
    datagram: bool = False  # rides a datagram (failure detection), else the peer's stream


_BY_NUMBER: dict[int, Kind] = {}
_BY_BODY: dict[type, Kind] = {}
_NAMES: set[str] = set()


def register(
    number: int, name: str, body: type, encode: Callable[[Any], list],
    decode: Callable[[list], Any], *, handler: str, datagram: bool = False,
) -> Kind:  # fmt: skip
    """Add a kind; KindConflict if its number, name or body class is taken."""
    if type(number) is not int or not 0 <= number < 2**31:
        raise KindConflict(f"kind number must be an int in [0, 2^31), got {number!r}")
    for taken, what in ((number in _BY_NUMBER, f"number {number}"), (name in _NAMES, name),
                        (body in _BY_BODY, body.__name__)):  # fmt: skip
        if taken:
            raise KindConflict(f"message kind {what} is registered twice")
    kind = Kind(number, name, body, encode, decode, handler, datagram)
    _BY_NUMBER[number] = kind
    _BY_BODY[body] = kind
    _NAMES.add(name)
    return kind


def kind_of(body: object) -> Kind:
    """The kind of a message body; TypeError if its class is not registered."""
    kind = _BY_BODY.get(type(body))
    if kind is None:
        raise TypeError(f"not a registered message body: {body!r}"[:200])
    return kind


def kind_numbered(number: int) -> Kind | None:
    return _BY_NUMBER.get(number)


def kinds() -> list[Kind]:
    """Every registered kind, by number."""
    return [_BY_NUMBER[n] for n in sorted(_BY_NUMBER)]


def rides_datagram(body: object) -> bool:
    """The one routing rule both shells apply (see `Kind.datagram`)."""
    kind = _BY_BODY.get(type(body))
    return kind is not None and kind.datagram

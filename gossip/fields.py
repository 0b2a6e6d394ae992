"""Checks of one decoded msgpack field each, shared by every kind's decoder, and `WireError`.

Every decoder (`gossip.messages`, `agent.messages`, ...) reads untrusted values only through
these: a field of the wrong type, out of range or too long raises `WireError`, which receivers
count and drop. The limits here hold for any kind; a kind's own limits live beside its codec.
"""

from __future__ import annotations

import math
from typing import Any

MAX_ID_LEN = 256  # node ids, addresses, label keys and values
MAX_LABELS = 64
MAX_ITEMS = 100_000  # members or resource records in one message, msgpack containers
MAX_INT = 2**63 - 1


class WireError(ValueError):
    """A message that is malformed, oversized, of another version or of an unknown kind."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # short, stable category used as a counter name


def fail(what: str, value: Any) -> WireError:
    return WireError("malformed", f"{what}: got {type(value).__name__}")


def text(v: Any, what: str, most: int = MAX_ID_LEN) -> str:
    if not isinstance(v, str) or len(v) > most:
        raise fail(what, v)
    return v


def ident(v: Any, what: str, most: int = MAX_ID_LEN) -> str:
    s = text(v, what, most)
    if not s:
        raise WireError("malformed", f"{what}: empty")
    return s


def integer(v: Any, what: str, lo: int = 0, hi: int = MAX_INT) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise fail(what, v)
    return v


def number(v: Any, what: str, lo: float = 0.0, hi: float = 1e18) -> float:
    if type(v) not in (int, float) or not math.isfinite(v) or not lo <= v <= hi:
        raise fail(what, v)
    return float(v)


def array(v: Any, what: str, n: int | None = None, most: int = MAX_ITEMS) -> list:
    if not isinstance(v, list) or (n is not None and len(v) != n) or len(v) > most:
        raise fail(what, v)
    return v


def boolean(v: Any, what: str) -> bool:
    if not isinstance(v, bool):
        raise fail(what, v)
    return v


def label_table(v: Any) -> dict[str, str]:
    if not isinstance(v, dict) or len(v) > MAX_LABELS:
        raise fail("labels", v)
    return {ident(k, "label key"): text(x, "label value") for k, x in v.items()}

"""What the membership core wants its shell to do: every entry point returns a list of these.

One typed list instead of a return value plus drains: a shell handles each effect in one
`match`, in the list's order, and cannot forget one. The node core adds its own
(`agent.effects`).
"""

from __future__ import annotations

from typing import NamedTuple

from gossip.messages import Message, Status


class Outgoing(NamedTuple):
    """Send `msg` to the agent bound at `addr`."""

    addr: str
    msg: Message


class ResetStream(NamedTuple):
    """Close the stream to `addr`, dropping what is queued there: the member there was just
    suspected or declared failed. Delivered once it is reachable again, that backlog (old
    state, news from before) re-accused the living in a burst after a partition."""

    addr: str


class StatusChange(NamedTuple):
    """A member first seen, or its status changed in this node's view (for logs and checkers)."""

    time: float
    node: str
    status: Status
    incarnation: int


MembershipEffect = Outgoing | ResetStream | StatusChange

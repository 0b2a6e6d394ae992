"""What a node's cores want their shell to do: every entry point of `agent.node.NodeCore` (and
of `agent.placement.PlacementCore`) returns one list of these, in the order they were decided.

Membership's effects (`gossip.effects`: messages, stream resets, status changes), runs to start
or stop (`agent.execution`) and client replies: a shell carries them out in one `match` over
the list — the ZeroMQ agent (`agent.agent.Agent`) and the simulator's hosts
(`scenarios.sim.workload.SimNode`, `scenarios.sim.simulator.Simulator`) alike — so it cannot
forget one, and a reply goes after the messages decided before it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from agent.execution import StartTask, StopTask
from gossip.effects import Outgoing, ResetStream, StatusChange


class Reply(NamedTuple):
    """The answer to the client request the shell numbered `req` (`agent.requests`)."""

    req: int
    ok: bool
    data: Any
    error: str


Effect = Outgoing | ResetStream | StatusChange | StartTask | StopTask | Reply

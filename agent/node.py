"""A whole node's protocol state: the membership core and the placement core it reads its view
from, behind one core interface, as both shells (ZeroMQ agent and simulator) host it.

Every entry point returns one list of effects (`agent.effects`) for the shell to carry out in
order: membership's before placement's when both act in one call."""

from __future__ import annotations

import random
from typing import Any

from agent.effects import Effect
from agent.execution import TaskExit
from agent.messages import MAX_LIST_RECORDS, PLACEMENT
from agent.placement import PlacementCore
from agent.placement_config import PlacementConfig
from agent.tasks import TaskSpec
from gossip.config import SwimConfig
from gossip.kinds import kind_of
from gossip.membership import Membership
from gossip.messages import Message, ResourceRecord


class NodeCore:
    def __init__(
        self, node_id: str, addr: str, rng: random.Random, swim: SwimConfig | None = None,
        resources: ResourceRecord | None = None, placement: PlacementConfig | None = None,
        forecaster: Any = None, generation: int = 0,
    ) -> None:  # fmt: skip
        """`generation`: larger on every restart of the node (see `gossip.membership`)."""
        self.membership = Membership(node_id, addr, rng, swim, resources, generation)
        # a separate stream so placement decisions do not shift the membership protocol's draws
        prng = random.Random(f"{rng.random()}:placement")
        self.placement = PlacementCore(self.membership, placement, prng, forecaster)
        self.node_id = node_id
        self.addr = addr

    def on_message(self, now: float, msg: Message) -> list[Effect]:
        # the kind's registration names its core; membership takes (and counts) any other
        if kind_of(msg.body).handler == PLACEMENT:
            return self.placement.on_message(now, msg)
        return self.membership.on_message(now, msg)

    def on_tick(self, now: float) -> list[Effect]:
        out = self.membership.on_tick(now) if now >= self.membership.next_wakeup() else []
        if now >= self.placement.next_wakeup():  # also right after the live set changed
            out = out + self.placement.on_tick(now)
        return out

    def next_wakeup(self) -> float:
        return min(self.membership.next_wakeup(), self.placement.next_wakeup())

    def join(self, now: float, seeds: list[str]) -> list[Effect]:
        return self.membership.join(now, seeds)

    def leave(self, now: float) -> list[Effect]:
        self.placement.stop_accepting()
        return self.membership.leave(now)

    # placement inputs, re-exported so a shell needs only this object
    def submit(self, now: float, req: int, task_id: str, spec: TaskSpec) -> list[Effect]:
        return self.placement.submit(now, req, task_id, spec)

    def get(self, now: float, req: int, task_id: str) -> list[Effect]:
        return self.placement.get(now, req, task_id)

    def list(self, now: float, req: int, state: int = -1,
             limit: int = MAX_LIST_RECORDS) -> list[Effect]:  # fmt: skip
        return self.placement.list(now, req, state, limit)

    def cancel(
        self, now: float, req: int, task_id: str, by: str | None = None,
    ) -> list[Effect]:  # fmt: skip
        return self.placement.cancel(now, req, task_id, by)

    def on_task_exit(self, now: float, e: TaskExit) -> list[Effect]:
        return self.placement.on_task_exit(now, e)

    def observe_load(self, now: float, load: float, tasks_load: float | None = None) -> None:
        self.placement.observe_load(now, load, tasks_load)

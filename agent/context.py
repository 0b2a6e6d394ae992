"""What the parts of one node's placement core share: identity, config, clockless randomness, the
membership view, and one list of effects (`agent.effects`) in the order they are decided. Sends
to this node's own address are queued and delivered locally by the core (no recursion, same
code path as a remote peer)."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from agent.effects import Effect
from agent.placement_config import PlacementConfig
from agent.ring import LiveRing, shared_ring
from agent.tasks import TaskRecord
from gossip.effects import Outgoing
from gossip.membership import Membership
from gossip.messages import Message, Status

LIVE = (Status.ALIVE, Status.SUSPECT)


class Context:
    def __init__(
        self, node_id: str, addr: str, view: Membership, config: PlacementConfig,
        rng: random.Random,
    ) -> None:  # fmt: skip
        self.node_id = node_id
        self.addr = addr
        self.view = view
        self.config = config
        self.rng = rng
        self.stats: Counter[str] = Counter()
        self.effects: list[Effect] = []  # what the shell is to do: messages, runs, replies
        self.local: list[Message] = []
        self._ring: LiveRing | None = None
        self._ring_epoch = -1

    def send(self, addr: str, body: Any) -> None:
        msg = Message(self.node_id, self.addr, 0, body)
        if addr == self.addr:
            self.local.append(msg)
        else:
            self.effects.append(Outgoing(addr, msg))

    def send_to(self, node: str, body: Any) -> bool:
        addr = self.addr if node == self.node_id else self.view.addr_of(node)
        if addr is None:
            return False
        self.send(addr, body)
        return True

    def is_live(self, node: str) -> bool:
        return node == self.node_id or self.view.status_of(node) in LIVE

    def ring(self) -> LiveRing:
        """Consistent hashing over the live members. The ring itself is built over every known
        member (rebuilt only when one is first known) and skips the others when asked: a ring
        rebuilt at every failure and recovery cost a 160,000-point sort each time at 5,000
        nodes, once per distinct live set."""
        epoch = self.view.member_epoch
        if self._ring is None or epoch != self._ring_epoch:
            self._ring = LiveRing(shared_ring(frozenset(self.view.known_nodes())), self.is_live)
            self._ring_epoch = epoch
        return self._ring

    def owner_of(self, rec: TaskRecord) -> str:
        """The first live node of the record's replica list, as this node sees it."""
        for n in rec.replicas:
            if self.is_live(n):
                return n
        return self.node_id  # every listed replica is gone: whoever holds a copy carries on

    def report_targets(self, rec: TaskRecord) -> list[str]:
        """Live replicas of the record; if none, the nodes that would hold it now."""
        live = [n for n in rec.replicas if self.is_live(n)]
        return live or self.ring().preference(rec.id, self.config.replicas)

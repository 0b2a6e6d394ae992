"""Tiny cores for exercising and benchmarking the simulator (not protocol code)."""

from __future__ import annotations

import math
import random

from gossip.effects import Outgoing
from gossip.messages import Ack, Message, Ping


class Recorder:
    """Never ticks; records every message it gets; answers pings with an ack."""

    def __init__(self, addr: str, reply: bool = False) -> None:
        self.addr = addr
        self.reply = reply
        self.got: list[tuple[float, Message]] = []
        self.seq = 0

    def on_message(self, now: float, msg: Message) -> list[Outgoing]:
        self.got.append((now, msg))
        if self.reply and isinstance(msg.body, Ping):
            return [self._ack(msg)]
        return []

    def _ack(self, msg: Message) -> Outgoing:
        return Outgoing(msg.sender_addr, Message(self.addr, self.addr, msg.seq, Ack(self.addr)))

    def on_tick(self, now: float) -> list[Outgoing]:
        raise AssertionError("Recorder never asks for a tick")

    def next_wakeup(self) -> float:
        return math.inf

    def ping(self, to: str) -> list[Outgoing]:
        self.seq += 1
        return [Outgoing(to, Message(self.addr, self.addr, self.seq, Ping(to)))]


class Ticker:
    """Ticks every `period`; records the tick times and the messages it gets."""

    def __init__(self, addr: str, period: float, start: float = 0.0) -> None:
        self.addr = addr
        self.period = period
        self.next = start
        self.ticks: list[float] = []
        self.got: list[tuple[float, Message]] = []

    def on_message(self, now: float, msg: Message) -> list[Outgoing]:
        self.got.append((now, msg))
        return []

    def on_tick(self, now: float) -> list[Outgoing]:
        assert now >= self.next, "ticked earlier than requested"
        self.ticks.append(now)
        self.next = now + self.period
        return []

    def next_wakeup(self) -> float:
        return self.next


class Flooder:
    """Every `period` sends a ping to `fanout` random peers; acks every ping it receives."""

    def __init__(self, addr: str, peers: list[str], rng: random.Random,
                 period: float = 0.1, fanout: int = 1) -> None:  # fmt: skip
        self.addr = addr
        self.peers = peers
        self.rng = rng
        self.period = period
        self.fanout = fanout
        self.next = rng.random() * period
        self.seq = 0
        self.pings = 0
        self.acks = 0

    def on_message(self, now: float, msg: Message) -> list[Outgoing]:
        if type(msg.body) is Ping:
            self.pings += 1
            return [self._ack(msg)]
        self.acks += 1
        return []

    def _ack(self, msg: Message) -> Outgoing:
        return Outgoing(msg.sender_addr, Message(self.addr, self.addr, msg.seq, Ack(self.addr)))

    def on_tick(self, now: float) -> list[Outgoing]:
        self.next = now + self.period
        out = []
        for _ in range(self.fanout):
            peer = self.peers[self.rng.randrange(len(self.peers))]
            self.seq += 1
            out.append(Outgoing(peer, Message(self.addr, self.addr, self.seq, Ping(peer))))
        return out

    def next_wakeup(self) -> float:
        return self.next


def flood_cluster(sim, n: int, seed: int, period: float = 0.1, fanout: int = 1) -> list[str]:
    addrs = [f"sim://n{i}" for i in range(n)]
    for a in addrs:
        sim.add_node(a, Flooder(a, addrs, random.Random(f"{seed}:{a}"), period, fanout))
    return addrs

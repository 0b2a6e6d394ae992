"""SWIM membership with Lifeguard, plus resource-state dissemination: a pure protocol core.

The core never does I/O, never reads a clock and draws randomness only from the generator it
is given. A shell feeds it messages and ticks with the current time and carries out the
effects it returns (`gossip.effects`); `next_wakeup()` says when it wants its next tick.

Protocol summary (see docs/protocol.md):
- failure detection: randomized round-robin probes; if no direct ack within the probe timeout,
  k other members probe on our behalf (PING_REQ); relays send NACK when they get no answer;
- suspicion: a failed probe makes the target SUSPECT; the suspect refutes by raising its
  incarnation; otherwise it is declared DEAD when the suspicion timer fires. The timer starts
  long and shrinks as independent suspicions of the same incarnation arrive (Lifeguard);
- local health: failed probes, missing nacks and refuting suspicions about ourselves raise an
  awareness score that stretches our own probe interval and timeout (Lifeguard);
- dissemination: membership updates and per-node resource records ride on every message
  through a transmit-limited queue, plus dedicated gossip rounds to a few random members;
  periodic push-pull with one random member repairs what was missed (a digest of the view
  first, then only the entries that differ), and a periodic push-pull with one failed member
  lets a healed partition re-merge.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gossip.broadcast import BroadcastQueue
from gossip.config import SwimConfig
from gossip.effects import MembershipEffect, Outgoing, ResetStream, StatusChange
from gossip.messages import (
    Ack,
    Digest,
    Gossip,
    GossipOnly,
    MemberUpdate,
    Message,
    Nack,
    Ping,
    PingReq,
    ResourceRecord,
    Status,
    Sync,
    SyncPush,
    SyncReply,
    quantized,
)

_EVENT_LOG_MAX = 10_000

# A node's incarnations and its own resource record versions start at generation << GEN_SHIFT:
# a restarted process (a new generation) outranks everything its previous life said at once,
# and peers can tell "the same node, restarted" from "the same process, refuting".
GEN_SHIFT = 20
MAX_GENERATION = (1 << (62 - GEN_SHIFT)) - 1


def generation_of(incarnation: int) -> int:
    return incarnation >> GEN_SHIFT


_MAX_CATCH_UPS = 3  # extra push-pulls right after joining, while they keep teaching us members


@dataclass(frozen=True, slots=True)
class MemberView:
    """One row of this node's membership table."""

    node: str
    addr: str
    status: Status
    incarnation: int
    resources: ResourceRecord | None
    last_heard: float | None  # time of the last message received from it directly
    since: float  # time of its last status change in this view


@dataclass(slots=True)
class _Member:
    node: str
    addr: str
    incarnation: int
    status: Status
    since: float
    by: str = ""  # who raised the suspicion or failure we hold about it


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    direct_deadline: float
    deadline: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    requester_addr: str
    requester_seq: int
    target: str
    deadline: float


@dataclass(slots=True)
class _Suspicion:
    incarnation: int
    start: float
    lo: float
    hi: float
    k: int
    accusers: set[str]

    def deadline(self) -> float:
        c = len(self.accusers) - 1  # the first accuser starts the timer; others confirm
        if self.k < 1 or c <= 0:
            frac = 0.0 if self.k >= 1 else 1.0
        else:
            frac = min(1.0, math.log(c + 1) / math.log(self.k + 1))
        return self.start + max(self.lo, self.hi - (self.hi - self.lo) * frac)


class Membership:
    """One node's view of the cluster and its part in the SWIM protocol."""

    def __init__(
        self,
        node_id: str,
        addr: str,
        rng: random.Random,
        config: SwimConfig | None = None,
        resources: ResourceRecord | None = None,
        generation: int = 0,
    ) -> None:
        """`generation`: larger on every restart of this node (the agent uses its start time);
        0 for a node that never restarts (tests, a simulator's first life)."""
        if not 0 <= generation <= MAX_GENERATION:
            raise ValueError(f"generation must be in [0, {MAX_GENERATION}], got {generation}")
        base = generation << GEN_SHIFT
        self._generation = generation
        self._clock_origin = 0.0  # the shell's time at our first call, when we were `generation`
        self._ceiling_at, self._ceiling = -math.inf, 0  # `_plausible`'s bound, cached per instant
        self.node_id = node_id
        self.addr = addr
        self.config = config or SwimConfig()
        self._rng = rng
        self.stats: Counter[str] = Counter()
        self._members: dict[str, _Member] = {
            node_id: _Member(node_id, addr, base, Status.ALIVE, 0.0)
        }
        # restarted members held dead until a placement layer has seen them go: node -> (when
        # to take the new life in, its alive update)
        self._rejoins: dict[str, tuple[float, MemberUpdate]] = {}
        self._records: dict[str, ResourceRecord] = {}
        self._counts: Counter[Status] = Counter({Status.ALIVE: 1})  # members by status
        self._live: list[str] = []  # other members that are alive or suspect, for O(1) sampling
        self._live_pos: dict[str, int] = {}
        self._live_epoch = 0
        self._member_epoch = 0  # bumped whenever a member is first known
        self._last_heard: dict[str, float] = {}
        # membership changes go first: a flood of resource records must never delay the news
        # that a member failed
        self._member_queue = BroadcastQueue()
        self._record_queue = BroadcastQueue()  # records new here, or with new capacity or labels
        self._load_queue = BroadcastQueue()  # records in which only load moved (`_spread_record`)
        self._events: list[tuple[float, str, Status, int]] = []
        self._seq = 0
        self._probe: _Probe | None = None
        self._probe_order: list[str] = []
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, _Suspicion] = {}
        self._stream_resets: dict[str, None] = {}  # addresses, in order, without repeats
        self._recently_dead: dict[str, float] = {}  # declared failed -> when, oldest first
        self._told_dead: dict[str, float] = {}  # failed members told so -> when (bounded)
        self._now = 0.0  # the time of the call being handled
        self._speak_up_until = -math.inf  # after a refutation: every message carries it
        self._awareness = 0
        self._seeds: list[str] = []
        self.joined = True
        self.left = False
        self._catch_ups = 0
        self._started = False
        self._next_probe = self._next_gossip = self._next_push_pull = 0.0
        self._next_reconnect = self._next_join = math.inf
        record = resources or ResourceRecord(node=node_id, version=0)
        self._records[node_id] = dataclasses.replace(record, node=node_id, version=base + 1)
        self._enqueue_member(self._members[node_id])
        self._spread_record(self._records[node_id], None)

    # ------------------------------------------------------------------ public API

    @property
    def incarnation(self) -> int:
        return self._members[self.node_id].incarnation

    @property
    def awareness(self) -> int:
        return self._awareness

    @property
    def resources(self) -> ResourceRecord:
        return self._records[self.node_id]

    def members(self) -> list[MemberView]:
        return [self._view(m) for m in self._members.values()]

    def member(self, node_id: str) -> MemberView | None:
        m = self._members.get(node_id)
        return self._view(m) if m else None

    @property
    def live_epoch(self) -> int:
        """Bumped whenever the set of live (alive or suspect) members changes: a cache key."""
        return self._live_epoch

    @property
    def member_epoch(self) -> int:
        """Changes whenever the set of known members (any status) changes."""
        return self._member_epoch

    def known_nodes(self) -> list[str]:
        """Every member ever known, whatever its status, this node included."""
        return list(self._members)

    def count(self, status: Status) -> int:
        """Known members with this status, this node included."""
        return self._counts[status]

    def members_not_left(self) -> int:
        """Members not known to have left, this node included: the cluster's size as a
        majority is counted against (a failed member counts until it is reaped)."""
        return len(self._members) - self._counts[Status.LEFT]

    def live_nodes(self) -> list[str]:
        """Other members believed alive or suspect (this node excluded)."""
        return list(self._live)

    def status_of(self, node_id: str) -> Status | None:
        m = self._members.get(node_id)
        return m.status if m else None

    def addr_of(self, node_id: str) -> str | None:
        m = self._members.get(node_id)
        return m.addr if m else None

    def generation_of_member(self, node_id: str) -> int | None:
        """The latest process life of `node_id` this node knows of (None: never heard of)."""
        m = self._members.get(node_id)
        return generation_of(m.incarnation) if m else None

    def record_of(self, node_id: str) -> ResourceRecord | None:
        return self._records.get(node_id)

    def live_count(self) -> int:
        """Members believed alive or suspect, this node included."""
        return len(self._live) + (0 if self.left else 1)

    def join(self, now: float, seeds: Sequence[str]) -> list[Outgoing]:
        """Contact the seeds (push-pull) until one answers; retried every join_retry_interval."""
        self._start(now)
        self._seeds = [s for s in seeds if s != self.addr]
        if not self._seeds:
            self.joined = True
            return []
        self.joined = False
        self._next_join = now + self.config.join_retry_interval
        return [self._sync_to(s, join=True) for s in self._seeds]

    def leave(self, now: float) -> list[MembershipEffect]:
        """Announce a graceful departure; keep ticking for config.leave_linger to spread it."""
        if self.left:
            return []
        self.left = True
        me = self._members[self.node_id]
        me.incarnation += 1
        self._set_status(now, me, Status.LEFT)
        self._enqueue_member(me)
        targets = self._random_members(2 * self.config.gossip_fanout)
        update = self._update_of(me)
        return self._effects([self._send(m.addr, GossipOnly(Gossip((update,)))) for m in targets])

    def update_resources(self, now: float, **fields: object) -> None:
        """Publish a new version of this node's resource record."""
        old = self._records[self.node_id]
        fields.pop("node", None)
        fields.pop("version", None)
        if "labels" in fields:
            fields["labels"] = dict(fields["labels"])  # type: ignore[call-overload]
        if "forecast" in fields:
            fields["forecast"] = tuple(map(quantized, fields["forecast"]))  # type: ignore[call-overload]
        for k in ("load", "mem_load"):  # as the wire carries them: an echo is then no news
            if k in fields:
                fields[k] = quantized(fields[k])  # type: ignore[arg-type]
        new = dataclasses.replace(old, version=old.version + 1, **fields)  # type: ignore[arg-type]
        self._records[self.node_id] = new
        self._spread_record(new, old)

    def next_wakeup(self) -> float:
        times = [self._next_push_pull, self._next_join, self._next_reconnect]
        if self._anything_queued():
            # a gossip round with nothing queued sends nothing: an idle agent woke 5 times a
            # second for it (news queued later makes the next round due at once)
            times.append(self._next_gossip)
        if not self.left:
            times.append(self._next_probe)
        if self._probe is not None:
            times.append(self._probe.deadline)
            if not self._probe.indirect_sent:
                times.append(self._probe.direct_deadline)
        times.extend(r.deadline for r in self._relays.values())
        times.extend(s.deadline() for s in self._suspicions.values())
        times.extend(t for t, _ in self._rejoins.values())
        return min(times)

    # ------------------------------------------------------------------ ticks

    def on_tick(self, now: float) -> list[MembershipEffect]:
        self._start(now)
        self._now = now
        out: list[Outgoing] = []
        self._check_rejoins(now)
        self._check_suspicions(now)
        self._check_relays(now, out)
        self._check_probe(now, out)
        if not self.left and now >= self._next_probe and self._probe is None:
            self._start_probe(now, out)
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval
            self._gossip_round(out)
        if now >= self._next_push_pull:
            self._next_push_pull = now + self._push_pull_interval()
            target = self._random_members(1)
            if target and not self.left:
                out.append(self._sync_to(target[0].addr))
                self.stats["push_pull"] += 1
        if now >= self._next_join:
            if self.joined:
                self._next_join = math.inf
            else:
                self._next_join = now + self.config.join_retry_interval
                out.extend(self._sync_to(s, join=True) for s in self._seeds)
        if now >= self._next_reconnect:
            self._next_reconnect = now + self.config.reconnect_interval
            self._reap(now)
            dead = [m for m in self._members.values() if m.status == Status.DEAD]
            if dead and not self.left:
                target = self._rng.choice(dead)
                out.append(self._sync_to(target.addr))
                # and a datagram, which needs no connection (the stream to a peer cut off may
                # take seconds to connect again after a heal): if it is alive, it tells us it
                # believes we are dead, and our refutation crosses at once
                me = self._update_of(self._members[self.node_id])
                out.append(self._send(target.addr, GossipOnly(Gossip((me,)))))
                self.stats["reconnect"] += 1
        return self._effects(out)

    def _reap(self, now: float) -> None:
        """Forget members failed or left long ago (Serf's reap): a table of every node ever
        seen grows without end under churn, and fakes that never answered would stay in it.
        A reaped node that comes back is taken in as a new member."""
        cfg = self.config
        for m in list(self._members.values()):
            if m.status == Status.DEAD and now - m.since >= cfg.reap_failed_after or (
                m.status == Status.LEFT and now - m.since >= cfg.reap_left_after
            ):
                self._forget(m.node)

    def _forget(self, node: str) -> None:
        self._counts[self._members.pop(node).status] -= 1
        self._member_epoch += 1
        for table in (self._records, self._last_heard, self._suspicions, self._rejoins,
                      self._recently_dead, self._told_dead):
            table.pop(node, None)
        self._member_queue.discard(node)
        self._record_queue.discard(node)
        self._load_queue.discard(node)
        self.stats["reaped"] += 1

    def _admit(self, node: str) -> bool:
        """Room for one more member? Refused and counted when the table is full."""
        if len(self._members) < self.config.max_members:
            return True
        self.stats["members_refused"] += 1
        return False

    def _start(self, now: float) -> None:
        if self._started:
            return
        self._started = True
        cfg = self.config
        # stagger the periodic work so that nodes started together do not act in lockstep
        self._next_probe = now + self._rng.random() * cfg.probe_interval
        self._next_gossip = now + self._rng.random() * cfg.gossip_interval
        self._next_push_pull = now + (0.5 + self._rng.random()) * cfg.push_pull_interval
        self._next_reconnect = now + (0.5 + self._rng.random()) * cfg.reconnect_interval
        self._members[self.node_id].since = now
        self._clock_origin = now
        self._ceiling_at = -math.inf

    def _plausible(self, now: float, incarnation: int) -> bool:
        """Whether an incarnation (or a record version, same layout) could have been reached by
        now: its generation (milliseconds since 2020 at a node's start) is at most our own clock
        plus `max_clock_skew`. Anything above is forged or from a clock far off; taking it in
        would let one message push a member to the top of the integers, where its refutation
        (one above) can no longer be sent. The ceiling moves with time, so a refutation of the
        largest claim we accept is accepted everywhere within a millisecond."""
        if now != self._ceiling_at:  # one message carries many: compute once per instant
            elapsed = now - self._clock_origin + self.config.max_clock_skew
            self._ceiling = (self._generation + int(elapsed * 1000) + 1) << GEN_SHIFT
            self._ceiling_at = now
        return incarnation < self._ceiling

    def _push_pull_interval(self) -> float:
        # memberlist: back off push-pull in large clusters so its cost per node stays flat
        n = self.live_count()
        scale = 1.0 if n <= 32 else 1.0 + math.log2(n / 32)
        return self.config.push_pull_interval * scale

    def _stretch(self) -> int:
        return self._awareness + 1

    def _start_probe(self, now: float, out: list[Outgoing]) -> None:
        target = self._next_probe_target()
        interval = self.config.probe_interval * self._stretch()
        self._next_probe = now + interval
        if target is None:
            return
        self._seq += 1
        self._probe = _Probe(
            seq=self._seq,
            target=target.node,
            direct_deadline=now + self.config.probe_timeout * self._stretch(),
            deadline=now + interval,
        )
        extra: tuple[MemberUpdate, ...] = ()
        if target.status == Status.SUSPECT:
            # Lifeguard "buddy system": tell a suspect directly so it can refute at once
            extra = (self._update_of(target),)
        out.append(self._send(target.addr, Ping(target.node, self._piggyback(extra)), self._seq))
        self.stats["ping_sent"] += 1

    def _next_probe_target(self) -> _Member | None:
        while self._probe_order:
            m = self._members.get(self._probe_order.pop())
            if m is not None and m.status <= Status.SUSPECT and m.node != self.node_id:
                return m
        candidates = list(self._live)
        if not candidates:
            return None
        self._rng.shuffle(candidates)
        self._probe_order = candidates
        return self._members[self._probe_order.pop()]

    def _check_probe(self, now: float, out: list[Outgoing]) -> None:
        p = self._probe
        if p is None:
            return
        target = self._members.get(p.target)
        if target is None or target.status > Status.SUSPECT:
            self._probe = None
            return
        if not p.indirect_sent and now >= p.direct_deadline:
            p.indirect_sent = True
            relays = self._random_members(self.config.indirect_checks, exclude={p.target})
            p.expected_nacks = len(relays)
            for r in relays:
                out.append(self._send(r.addr, PingReq(p.target, target.addr, self._piggyback()),
                                      p.seq))  # fmt: skip
            self.stats["ping_req_sent"] += len(relays)
        if now >= p.deadline:
            self._probe = None
            self.stats["probe_failed"] += 1
            missed = p.expected_nacks - p.nacks if p.expected_nacks else 1
            self._adjust_awareness(max(missed, 0))
            self._suspect(now, target.node, target.incarnation, self.node_id)

    def _check_relays(self, now: float, out: list[Outgoing]) -> None:
        expired = [seq for seq, r in self._relays.items() if now >= r.deadline]
        for seq in expired:
            r = self._relays.pop(seq)
            out.append(self._send(r.requester_addr, Nack(r.target), r.requester_seq))
            self.stats["nack_sent"] += 1

    def _check_suspicions(self, now: float) -> None:
        for node, s in list(self._suspicions.items()):
            if now >= s.deadline():
                del self._suspicions[node]
                m = self._members[node]
                if m.status == Status.SUSPECT and m.incarnation == s.incarnation:
                    self._set_status(now, m, Status.DEAD, by=self.node_id)
                    self._enqueue_member(m, by=self.node_id)
                    self.stats["declared_dead"] += 1

    def _anything_queued(self) -> bool:
        return bool(len(self._member_queue) or len(self._record_queue) or len(self._load_queue))

    def _gossip_round(self, out: list[Outgoing]) -> None:
        if not self._anything_queued():
            return
        targets = self._random_members(self.config.gossip_fanout)
        dead = self._recently_dead
        while dead and self._now - next(iter(dead.values())) > self.config.gossip_to_dead:
            del dead[next(iter(dead))]
        if dead:
            # One failed lately may only be cut off: if the cut heals, it hears our news (our
            # refutations first) now, not at the next reconnect (issue 12: re-merge 8 s, not
            # within one reconnect interval, on the simulator)
            node = list(dead)[int(self._rng.random() * len(dead))]
            targets.append(self._members[node])
            self.stats["gossip_to_dead"] += 1
        for m in targets:
            g = self._piggyback()
            if not g:
                break
            out.append(self._send(m.addr, GossipOnly(g)))
            self.stats["gossip_sent"] += 1

    # ------------------------------------------------------------------ messages

    def on_message(self, now: float, msg: Message) -> list[MembershipEffect]:
        self._start(now)
        self._now = now
        out: list[Outgoing] = []
        if msg.sender == self.node_id:
            self.stats["from_self_dropped"] += 1
            return out
        self._last_heard[msg.sender] = now
        sender = self._members.get(msg.sender)
        if sender is not None and sender.status == Status.DEAD:
            self._tell_it_is_dead(now, sender, out)
        body = msg.body
        match body:
            case Ping(target, gossip):
                self._apply_gossip(now, gossip)
                if target == self.node_id:
                    sender = self._members.get(msg.sender)
                    extra: tuple[MemberUpdate, ...] = ()
                    if sender is not None and sender.status == Status.SUSPECT:
                        extra = (self._update_of(sender),)  # buddy system on the reply path too
                    ack = Ack(self.node_id, self._piggyback(extra))
                    out.append(self._send(msg.sender_addr, ack, msg.seq))
                else:
                    self.stats["ping_wrong_target"] += 1
            case Ack(target, gossip):
                self._apply_gossip(now, gossip)
                self._on_ack(now, msg.seq, target, out)
            case PingReq(target, target_addr, gossip):
                self._apply_gossip(now, gossip)
                if target != self.node_id and not self.left:
                    self._seq += 1
                    self._relays[self._seq] = _Relay(
                        msg.sender_addr, msg.seq, target, now + self.config.probe_timeout
                    )
                    out.append(self._send(target_addr, Ping(target, self._piggyback()), self._seq))
            case Nack(target):
                p = self._probe
                if p is not None and p.seq == msg.seq and p.target == target:
                    p.nacks += 1
            case GossipOnly(gossip):
                self._apply_gossip(now, gossip)
            case Sync(digest, join):
                if join:
                    self.stats["join_served"] += 1
                out.append(self._send(msg.sender_addr, self._answer_digest(now, digest)))
            case SyncReply(members, resources, want_members, want_resources):
                known = len(self._members)
                self._merge_state(now, msg.sender, members, resources)
                learned = len(self._members) > known
                if want_members or want_resources:
                    out.append(self._send(msg.sender_addr,
                                          self._wanted(want_members, want_resources)))  # fmt: skip
                if not self.joined:
                    self.joined = True
                    self._next_join = math.inf
                    self._catch_ups = _MAX_CATCH_UPS
                    learned = True
                if self._catch_ups > 0:
                    # members that joined at the same time as us were not in the seed's
                    # answer, and news of them may have stopped spreading before anyone knew
                    # us: push-pull again soon while that still teaches us new members
                    self._catch_ups = self._catch_ups - 1 if learned else 0
                    if learned:
                        self._next_push_pull = min(
                            self._next_push_pull, now + 5 * self.config.gossip_interval
                        )
            case SyncPush(members, resources):
                self._merge_state(now, msg.sender, members, resources)
            case _:
                self.stats["unexpected_kind"] += 1
        return self._effects(out)

    def _tell_it_is_dead(self, now: float, m: _Member, out: list[Outgoing]) -> None:
        """A member we hold failed speaks to us (a healed partition, a false declaration):
        tell it, at most once a probe interval, so that it refutes and the two views merge;
        otherwise only it can learn that, from news that has mostly stopped spreading. Told at
        the address we know for it, not the one the message names: a forged sender cannot
        aim these at a third party."""
        if now < self._told_dead.get(m.node, -math.inf) + self.config.probe_interval:
            return
        self._told_dead[m.node] = now
        while len(self._told_dead) > 4 * max(1, len(self._recently_dead)) + 64:
            del self._told_dead[next(iter(self._told_dead))]
        out.append(self._send(m.addr, GossipOnly(Gossip((self._update_of(m),)))))
        self.stats["told_dead"] += 1

    def _on_ack(self, now: float, seq: int, target: str, out: list[Outgoing]) -> None:
        relay = self._relays.pop(seq, None)
        if relay is not None:
            if relay.target == target:
                out.append(self._send(relay.requester_addr, Ack(target, self._piggyback()),
                                      relay.requester_seq))  # fmt: skip
            return
        p = self._probe
        if p is not None and p.seq == seq and p.target == target:
            self._probe = None
            self.stats["probe_ok"] += 1
            self._adjust_awareness(-1)
        else:
            self.stats["ack_stale"] += 1

    # ------------------------------------------------------------------ state merging

    def _apply_gossip(self, now: float, g: Gossip) -> None:
        for u in g.members:
            self._apply_update(now, u)
        for r in g.resources:
            self._apply_record(now, r)

    def _merge_state(
        self,
        now: float,
        sender: str,
        members: Iterable[MemberUpdate],
        resources: Iterable[ResourceRecord],
    ) -> None:
        """Anti-entropy merge. What it teaches us is old news elsewhere, so it is not
        re-gossiped, except what the sender says of itself (a join, a healed partition)."""
        for u in members:
            if u.status == Status.LEFT and u.node not in self._members:
                # a departure we never heard of, or reaped already: old news. Taking it in
                # again would pass reaped members back and forth between tables forever.
                continue
            if u.status == Status.DEAD and u.node != self.node_id:
                # a peer's belief that someone is dead only makes us suspect it, so that a
                # live node gets the chance to refute (memberlist does the same)
                u = dataclasses.replace(u, status=Status.SUSPECT)
            self._apply_update(now, u, spread=u.node == sender)
        for r in resources:
            self._apply_record(now, r, spread=r.node == sender)

    def _apply_record(self, now: float, r: ResourceRecord, spread: bool = True) -> None:
        if not self._plausible(now, r.version):
            self.stats["implausible_version"] += 1
            return
        if r.node == self.node_id:
            mine = self._records[self.node_id]
            if r.version > mine.version or (r.version == mine.version and r != mine):
                # a record of ours we never wrote (forged, or an older life's): outrank it, as
                # a refutation outranks a suspicion, or peers would keep it. (Our own record
                # echoed back, the same version and contents, is no news: refuting that too
                # republished every record on every echo and doubled the gossip.)
                self._records[self.node_id] = dataclasses.replace(mine, version=r.version + 1)
                self._spread_record(self._records[self.node_id], None)
                self.stats["record_refuted"] += 1
            return
        cur = self._records.get(r.node)
        if cur is None or r.version > cur.version:
            self._records[r.node] = r
            if spread:
                self._spread_record(r, cur)

    def _spread_record(self, r: ResourceRecord, before: ResourceRecord | None) -> None:
        """Queue a record for gossip. One in which only load, allocation or forecast moved
        since `before` is soft state, outdated soon and repaired by push-pull: it is sent
        `load_retransmit_mult × log10 N` times (at the membership rate, load republishes
        were most of an idle agent's bytes). Anything else (capacity, labels, a record first
        seen, or one replacing such a record still being spread) as often as a member update."""
        if before is not None and r.node not in self._record_queue and (
            (r.cpus, r.memory, r.gpus, r.labels) == (before.cpus, before.memory, before.gpus,
                                                     before.labels)
        ):  # fmt: skip
            self._load_queue.put(r.node, r)
        else:
            self._load_queue.discard(r.node)
            self._record_queue.put(r.node, r)

    def _apply_update(self, now: float, u: MemberUpdate, spread: bool = True) -> None:
        if not self._plausible(now, u.incarnation):
            self.stats["implausible_incarnation"] += 1
            return
        if u.node == self.node_id:
            self._about_me(now, u)
            return
        m = self._members.get(u.node)
        if u.status == Status.ALIVE:
            if m is None:
                if not self._admit(u.node):
                    return
                m = _Member(u.node, u.addr, u.incarnation, Status.ALIVE, now)
                self._members[u.node] = m
                self._counts[Status.ALIVE] += 1
                self._member_epoch += 1
                self._live_add(u.node)
                if len(self._events) < _EVENT_LOG_MAX:
                    self._events.append((now, u.node, Status.ALIVE, u.incarnation))
                if spread:
                    self._enqueue_member(m)
            elif u.node in self._rejoins:
                if u.incarnation > self._rejoins[u.node][1].incarnation:
                    self._rejoins[u.node] = (self._rejoins[u.node][0], u)
            elif u.incarnation > m.incarnation:
                if m.status <= Status.SUSPECT and (
                    generation_of(u.incarnation) > generation_of(m.incarnation)
                ):
                    self._restarted(now, m, u)
                    return
                m.incarnation = u.incarnation
                m.addr = u.addr
                self._suspicions.pop(u.node, None)
                self._set_status(now, m, Status.ALIVE)
                if spread:
                    self._enqueue_member(m)
            return
        if m is None:
            if u.status == Status.LEFT and self._admit(u.node):
                # remember departures even of nodes we never saw, so a late alive cannot revive them
                m = _Member(u.node, u.addr, u.incarnation, Status.LEFT, now)
                self._members[u.node] = m
                self._counts[Status.LEFT] += 1
                self._member_epoch += 1
                if spread:
                    self._enqueue_member(m)
            return
        if u.incarnation < m.incarnation or m.status == Status.LEFT:
            return
        if u.status == Status.SUSPECT:
            if m.status == Status.DEAD:
                return
            self._suspect(now, m.node, u.incarnation, u.by, spread)
        elif u.status == Status.DEAD:
            pending = self._rejoins.get(u.node)
            if pending is not None and u.incarnation >= pending[1].incarnation:
                del self._rejoins[u.node]  # the new life is reported dead too
            if m.status == Status.DEAD and u.incarnation == m.incarnation:
                return
            m.incarnation = u.incarnation
            self._suspicions.pop(m.node, None)
            self._set_status(now, m, Status.DEAD, by=u.by)
            if spread:
                self._enqueue_member(m, by=u.by)
        elif u.status == Status.LEFT:
            m.incarnation = u.incarnation
            self._suspicions.pop(m.node, None)
            self._set_status(now, m, Status.LEFT)
            if spread:
                self._enqueue_member(m)

    def _restarted(self, now: float, m: _Member, u: MemberUpdate) -> None:
        """`m` is alive in a new generation before anyone declared its old life dead (a crash
        and a quick restart): that life is dead — its runs, leases and records with it. Say so
        (an event, the live set changes) so the layers above handle it as the crash it was,
        and take the new life in only after a quarantine, so that they see the two apart."""
        self.stats["restarts_seen"] += 1
        self._suspicions.pop(m.node, None)
        self._set_status(now, m, Status.DEAD, by=self.node_id)
        self._rejoins[m.node] = (now + self.config.probe_interval, u)

    def _check_rejoins(self, now: float) -> None:
        for node, (t, u) in list(self._rejoins.items()):
            if now < t:
                continue
            del self._rejoins[node]
            m = self._members[node]
            if m.status == Status.DEAD and u.incarnation > m.incarnation:
                m.incarnation = u.incarnation
                m.addr = u.addr
                self._set_status(now, m, Status.ALIVE)
                self._enqueue_member(m)

    def _about_me(self, now: float, u: MemberUpdate) -> None:
        me = self._members[self.node_id]
        if self.left or u.incarnation < me.incarnation:
            return
        if u.status == Status.ALIVE and u.incarnation == me.incarnation and u.addr == self.addr:
            return
        # someone believes we are suspect, dead or gone, or knows an older life of ours (at
        # another address, after a restart): refute with a higher incarnation
        me.incarnation = u.incarnation + 1
        self._enqueue_member(me)
        if u.status != Status.ALIVE:
            self.stats["refuted"] += 1
            self._adjust_awareness(1)
            # Spread like any news, a refutation reaches each peer with some luck: under 40 %
            # loss one accuser missed every copy and declared a live node failed (simulator,
            # issue 12). Until any suspicion of us would have run out, every message we send
            # carries it, so each peer we talk to hears it directly.
            self._speak_up_until = now + self.config.suspicion_bounds(self.live_count())[1]

    def _suspect(
        self, now: float, node: str, incarnation: int, by: str, spread: bool = True
    ) -> None:
        m = self._members.get(node)
        if m is None or incarnation < m.incarnation or m.status > Status.SUSPECT:
            return
        s = self._suspicions.get(node)
        if m.status == Status.SUSPECT and s is not None and s.incarnation == incarnation:
            if by and by not in s.accusers:
                s.accusers.add(by)
                if spread:
                    self._enqueue_member(m, by=by)  # pass the confirmation on
            return
        m.incarnation = incarnation
        lo, hi = self.config.suspicion_bounds(self.live_count())
        k = self.config.suspicion_confirmations
        if self.live_count() - 2 < k:
            k = 0
        self._suspicions[node] = _Suspicion(incarnation, now, lo, hi, k, {by or "?"})
        self._set_status(now, m, Status.SUSPECT, by=by)
        if spread:
            self._enqueue_member(m, by=by)
        if by == self.node_id:
            self.stats["suspect_raised"] += 1

    # ------------------------------------------------------------------ helpers

    def _set_status(self, now: float, m: _Member, status: Status, by: str = "") -> None:
        m.by = by
        if m.status == status:
            return
        self._counts[m.status] -= 1
        self._counts[status] += 1
        m.status = status
        m.since = now
        if m.node != self.node_id:
            if status <= Status.SUSPECT:
                self._live_add(m.node)
            else:
                self._live_remove(m.node)
            unreachable = status in (Status.SUSPECT, Status.DEAD)
            if unreachable and len(self._stream_resets) < _EVENT_LOG_MAX:
                self._stream_resets[m.addr] = None
            self._recently_dead.pop(m.node, None)
            if status == Status.DEAD:
                self._recently_dead[m.node] = now
        if len(self._events) < _EVENT_LOG_MAX:
            self._events.append((now, m.node, status, m.incarnation))

    def _live_add(self, node: str) -> None:
        if node not in self._live_pos:
            self._live_pos[node] = len(self._live)
            self._live.append(node)
            self._live_epoch += 1

    def _live_remove(self, node: str) -> None:
        i = self._live_pos.pop(node, None)
        if i is None:
            return
        self._live_epoch += 1
        last = self._live.pop()
        if last != node:
            self._live[i] = last
            self._live_pos[last] = i

    def _adjust_awareness(self, delta: int) -> None:
        self._awareness = min(max(self._awareness + delta, 0), self.config.awareness_max - 1)

    def _update_of(self, m: _Member, by: str = "") -> MemberUpdate:
        return MemberUpdate(m.node, m.addr, m.incarnation, m.status, by or m.by)

    def _enqueue_member(self, m: _Member, by: str = "") -> None:
        self._member_queue.put(m.node, self._update_of(m, by))

    def _piggyback(self, first: tuple[MemberUpdate, ...] = ()) -> Gossip:
        n = self.live_count()
        if self._now < self._speak_up_until:
            me = self._update_of(self._members[self.node_id])
            first = (me, *(u for u in first if u.node != self.node_id))
        room = self.config.gossip_max_items - len(first)
        limit = self.config.retransmit_limit(n)
        members = first + tuple(self._member_queue.take(room, limit))
        room -= len(members) - len(first)
        resources = self._record_queue.take(room, limit)
        resources += self._load_queue.take(room - len(resources),
                                           self.config.load_retransmit_limit(n))
        return Gossip(members, tuple(resources))

    def _sync_to(self, addr: str, join: bool = False) -> Outgoing:
        """Start a push-pull: our view as a digest, a few bytes per member. The whole state
        each way cost an idle 50-node cluster 630 of its 857 bytes a second per node."""
        self.stats["sync_sent"] += 1
        records = self._records
        digest = tuple(Digest(m.node, m.incarnation, m.status,
                              r.version if (r := records.get(m.node)) else 0)
                       for m in self._members.values())  # fmt: skip
        return self._send(addr, Sync(digest, join=join))

    def _answer_digest(self, now: float, digest: Sequence[Digest]) -> SyncReply:
        """In full, what the digest's sender lacks or holds older; by id, what it holds newer.

        A digest is a claim, and claims are only merged from full entries: nothing here changes
        our state. What we send is what we hold, each entry at most once; what we ask for is
        bounded by our table and the room left in it. An entry the merge rules would ignore is
        neither sent nor asked for (a member we do not know unless alive, a departure the
        other does not hold), nor is a claim from the future (`_plausible`) or a repeated id.
        """
        theirs: dict[str, Digest] = {}
        for d in digest:
            if d.node in theirs:
                self.stats["digest_repeated"] += 1
            elif self._plausible(now, d.incarnation) and self._plausible(now, d.version):
                theirs[d.node] = d
            else:
                self.stats["digest_implausible"] += 1
        members: list[MemberUpdate] = []
        records: list[ResourceRecord] = []
        for m in self._members.values():
            r = self._records.get(m.node)
            d = theirs.get(m.node)
            if d is None:
                if m.status == Status.ALIVE:
                    members.append(self._update_of(m))
                    if r is not None:
                        records.append(r)
                continue
            if (m.incarnation, m.status) > (d.incarnation, d.status):
                members.append(self._update_of(m))
            if r is not None and r.version > d.version:
                records.append(r)
        want_members: list[str] = []
        want_records: list[str] = []
        room = self.config.max_members - len(self._members)
        for node, d in theirs.items():
            m = self._members.get(node)
            if m is None:
                if d.status != Status.ALIVE or room <= 0:
                    continue
                room -= 1
                want_members.append(node)
                if d.version:
                    want_records.append(node)
                continue
            if (d.incarnation, d.status) > (m.incarnation, m.status):
                want_members.append(node)
            r = self._records.get(node)
            if d.version > (r.version if r is not None else 0):
                want_records.append(node)
        self.stats["sync_entries_sent"] += len(members) + len(records)
        return SyncReply(tuple(members), tuple(records), tuple(want_members),
                         tuple(want_records))  # fmt: skip

    def _wanted(self, want_members: Iterable[str], want_records: Iterable[str]) -> SyncPush:
        """What a SyncReply asked for, of what we hold, each entry once (however often it is
        named)."""
        members = [self._update_of(m) for n in dict.fromkeys(want_members)
                   if (m := self._members.get(n)) is not None]  # fmt: skip
        records = [r for n in dict.fromkeys(want_records) if (r := self._records.get(n))]
        self.stats["sync_entries_sent"] += len(members) + len(records)
        return SyncPush(tuple(members), tuple(records))

    def _random_members(self, k: int, exclude: set[str] | None = None) -> list[_Member]:
        live = self._live
        if len(live) <= k + (len(exclude) if exclude else 0):
            pool = [n for n in live if not (exclude and n in exclude)]
            self._rng.shuffle(pool)
            return [self._members[n] for n in pool[:k]]
        chosen: list[str] = []
        while len(chosen) < k:
            n = live[int(self._rng.random() * len(live))]
            if n not in chosen and not (exclude and n in exclude):
                chosen.append(n)
        return [self._members[n] for n in chosen]

    def _effects(self, out: list[Outgoing]) -> list[MembershipEffect]:
        """What the call being handled wants done, in the order a shell carries it out: the
        streams to reset before anything is sent (what follows may dial afresh), the messages,
        then the status changes it saw."""
        effects: list[MembershipEffect] = [ResetStream(a) for a in self._stream_resets]
        effects += out
        effects += (StatusChange(*e) for e in self._events)
        self._stream_resets.clear()
        self._events = []
        return effects

    def _send(self, addr: str, body: object, seq: int = 0) -> Outgoing:
        return Outgoing(addr, Message(self.node_id, self.addr, seq, body))  # type: ignore[arg-type]

    def _view(self, m: _Member) -> MemberView:
        return MemberView(
            node=m.node,
            addr=m.addr,
            status=m.status,
            incarnation=m.incarnation,
            resources=self._records.get(m.node),
            last_heard=self._last_heard.get(m.node),
            since=m.since,
        )

"""Keeping the copies of a record in step: the owner pushes each version to the replicas (and
the nodes consistent hashing now prefers, the hints) until acknowledged, replaces replicas that
failed (repair) and hands records back to replicas that return; a replica answers puts.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass, field

from agent.context import Context
from agent.messages import TaskGet, TaskGetReply, TaskPut, TaskPutAck
from agent.task_store import TaskStore
from agent.tasks import TaskRecord, TaskState

INF = math.inf
# Handing records back to a returning replica: at most this many puts to it per pace, so a
# burst never overflows the transport's bounded queue for a peer whose connection is not up yet
HANDBACK_BURST = 16
HANDBACK_PACE = 0.05  # seconds
COLLECTED = "finished and collected"  # a put's refusal: the task ended, its record is gone
# A replica holds back its ack of a placed or running version its writer pushed this long
# (`confirm_put`): a short run's result often follows within it, and one ack answers both.
# At most a third of `put_timeout`, after which the owner would push again.
ACK_DELAY = 0.1  # seconds


@dataclass(slots=True)
class ReplicaSync:
    """How far the replicas of one record the owner drives have confirmed its copy."""

    acked: dict[str, int] = field(default_factory=dict)  # replica -> version it confirmed
    next_push: float = 0.0
    synced: bool = False  # every live replica confirmed our copy since we (re)started driving it

    def forget(self) -> None:
        """Our copy may be stale: confirm it again before deciding anything on it."""
        self.acked.clear()
        self.synced = False


class Replication:
    def __init__(self, ctx: Context, store: TaskStore) -> None:
        self.ctx = ctx
        self.store = store
        self._live: set[str] | None = None  # the live set at the last membership check
        # records to hand back to each replica that came back live, record id -> when to
        # (re-)send it, in that order; an entry leaves when the replica confirms the record
        self._handback: dict[str, OrderedDict[str, float]] = {}
        self.handback_at = INF  # when `hand_back` has something to send next
        # (pusher addr, record id) -> (when due, the writer of the version pushed), in due
        # order: every ack is held back by the same delay
        self._held_acks: dict[tuple[str, str], tuple[float, str]] = {}
        self.acks_at = INF  # when `send_held_acks` has one due

    # ------------------------------------------------------------------ owner side

    def hints(self, rec: TaskRecord) -> list[str]:
        """Nodes consistent hashing now prefers for the record that are not its replicas."""
        return [n for n in self.ctx.ring().preference(rec.id, self.ctx.config.replicas)
                if n not in rec.replicas]  # fmt: skip

    def replicated(self, rec: TaskRecord, s: ReplicaSync, hints: bool = False) -> bool:
        """Every live replica (and with `hints`, every live preferred node) confirmed `rec`."""
        c = self.ctx
        nodes = (*rec.replicas, *self.hints(rec)) if hints else rec.replicas
        return all(
            n == c.node_id or s.acked.get(n, 0) >= rec.version or not c.is_live(n)
            for n in nodes
        )

    def push(self, now: float, rec: TaskRecord, s: ReplicaSync) -> bool:
        """Send the current version to replicas that have not confirmed it. True if any is due."""
        c = self.ctx
        # Besides the replicas, the nodes consistent hashing now prefers for the record: after
        # a partition each side may have repaired the replica set with its own nodes, and the
        # two lineages would never meet again; the preferred nodes are common to both, keep
        # the copy that wins (`newer`) and send it back to the loser (`Owner.on_put`).
        missing = [n for n in (*rec.replicas, *self.hints(rec))
                   if n != c.node_id and s.acked.get(n, 0) < rec.version and c.is_live(n)]
        if not missing:
            return False
        if now >= s.next_push:
            for n in missing:
                c.send_to(n, TaskPut(rec))
            s.next_push = now + c.config.put_timeout
        return True

    def repaired(self, rec: TaskRecord) -> tuple[str, ...] | None:
        """The replica list with those that failed or left replaced by the next live nodes on
        the ring; None if it needs no change."""
        c = self.ctx
        want = c.config.replicas
        keep = [n for n in rec.replicas if c.is_live(n)]
        if c.node_id not in keep:
            keep.insert(0, c.node_id)
        if len(keep) >= want and len(keep) == len(rec.replicas):
            return None
        for n in c.ring().preference(rec.id, want + len(rec.replicas) + 1):
            if len(keep) >= want:
                break
            if n not in keep:
                keep.append(n)
        if tuple(keep) == rec.replicas:
            return None
        c.stats["replica_repairs"] += 1
        return tuple(keep)

    def collected_there(self, sender: str, a: TaskPutAck, rec: TaskRecord) -> bool:
        """The ack says a replica (or preferred node) of `rec` ended and collected it."""
        return not a.ok and a.error == COLLECTED and a.state.terminal and (
            sender in rec.replicas or sender in self.hints(rec)
        )

    def take_ack(self, sender: str, sender_addr: str, a: TaskPutAck, rec: TaskRecord,
                 s: ReplicaSync) -> bool:  # fmt: skip
        """Count a replica's confirmation of `rec`; True if every live replica now has it."""
        if a.version > rec.version or (a.version == rec.version and a.state != rec.state) or (
            a.state.terminal and not rec.state.terminal
        ):
            # Its copy outranks ours (`agent.records.newer`): fetch it. This is NOT an
            # acknowledgement of our version (counting it as one let an owner that had been
            # paused past failure detection "replicate" and record a result for an attempt the
            # others had long replaced).
            self.ctx.send(sender_addr, TaskGet(a.task_id, 0))
            return False
        s.acked[sender] = max(s.acked.get(sender, 0), a.version)
        return self.replicated(rec, s)

    # ------------------------------------------------------------------ replica side

    def refuse_put(self, sender_addr: str, rec: TaskRecord) -> bool:
        """Answer a put that is not to be held here; True if it was answered so."""
        c = self.ctx
        old = self.store.records.get(rec.id)
        if old is not None and old.spec != rec.spec:
            c.stats["put_conflicts"] += 1
            c.send(sender_addr, TaskPutAck(rec.id, old.version, old.state, ok=False,
                                           error="the id is taken by a different task",
                                           submitted=old.submitted))  # fmt: skip
            return True
        tomb = self.store.tombstones.get(rec.id)
        if tomb is not None:
            # ended and collected here: say so, so that a stale pusher drops its copy too
            # (`Owner.on_put_ack`) instead of running the task again from it
            c.stats["puts_for_collected"] += 1
            c.send(sender_addr, TaskPutAck(rec.id, tomb.version, tomb.state, ok=False,
                                           error=COLLECTED))  # fmt: skip
            return True
        if old is not None:
            return False
        why = self.store.refusal(rec)
        if why:
            c.send(sender_addr, TaskPutAck(rec.id, 0, TaskState.PENDING, ok=False, error=why))
            return True
        if c.node_id not in rec.replicas:
            # a hint (see `push`) and we hold no copy of our own: nothing to reconcile here,
            # and keeping one would leave a copy that no owner keeps up to date
            c.send(sender_addr, TaskPutAck(rec.id, rec.version, rec.state, submitted=rec.submitted))
            return True
        return False

    def confirm_put(self, now: float, sender: str, sender_addr: str, rec: TaskRecord,
                    first: bool = False) -> None:  # fmt: skip
        """Acknowledge a put with the copy we now hold — at once, unless it is a placed or
        running version pushed by its writer that we now hold and did not hold an earlier
        version of (`first`: a task placed on submission, whose award waits for this ack):
        that ack waits `ACK_DELAY` for a newer version to answer with instead (a run's start
        and its result travel soon after the placement). A copy of ours that differs is
        answered at once."""
        mine = self.store.records[rec.id]
        key = (sender_addr, rec.id)
        if not first and mine == rec and rec.writer == sender and rec.state in (
            TaskState.PLACED, TaskState.RUNNING
        ):
            if key not in self._held_acks:
                due = now + min(ACK_DELAY, self.ctx.config.put_timeout / 3)
                self._held_acks[key] = (due, sender)
                self.acks_at = min(self.acks_at, due)
            return
        self._held_acks.pop(key, None)
        self.ctx.send(sender_addr, TaskPutAck(rec.id, mine.version, mine.state,
                                              submitted=mine.submitted))  # fmt: skip
        if mine != rec:
            # We keep a copy that outranks the one pushed (another owner wrote it: a takeover,
            # or the two sides of a partition). The ack alone cannot say so when both have the
            # same version and state, so hand the pusher our copy: it adopts it (`Owner.hold`)
            # and the two lineages converge instead of each believing the replica holds its own.
            self.ctx.send(sender_addr, TaskGetReply(rec.id, 0, mine))

    def send_held_acks(self, now: float) -> None:
        """Send the acks `confirm_put` held back that are due, each for the copy held now —
        with that copy too if another node wrote it meanwhile (as `confirm_put` does)."""
        if now < self.acks_at:
            return
        held = self._held_acks
        while held:  # oldest first: stop at the first not yet due (a burst holds hundreds)
            key = next(iter(held))
            due, writer = held[key]
            if due > now:
                break
            del held[key]
            addr, tid = key
            mine = self.store.records.get(tid)
            if mine is not None:
                self.ctx.send(addr, TaskPutAck(tid, mine.version, mine.state,
                                                submitted=mine.submitted))  # fmt: skip
                if mine.writer != writer:
                    self.ctx.send(addr, TaskGetReply(tid, 0, mine))
        self.acks_at = held[next(iter(held))][0] if held else INF

    # ------------------------------------------------------------------ returning replicas

    def live_set_changed(self, live: set[str]) -> set[str]:
        """Forget hand-backs to nodes gone again; return the nodes that came back."""
        back = live - self._live if self._live is not None else set()
        self._live = live
        for n in [n for n in self._handback if n not in live]:
            del self._handback[n]  # gone again: handed everything afresh when it is back
        for n in back:
            self._handback.pop(n, None)  # it came back with nothing: start over
        return back

    def hand_back_later(self, now: float, node: str, tid: str) -> None:
        self._handback.setdefault(node, OrderedDict())[tid] = now
        self.handback_at = now

    def handed_back(self, sender: str, a: TaskPutAck, rec: TaskRecord | None) -> None:
        """A returning replica's ack: it holds the record (or refused it for good)."""
        pending = self._handback.get(sender)
        if pending and a.task_id in pending and (
            rec is None or not a.ok or a.version >= rec.version
        ):
            del pending[a.task_id]
            if not pending:
                del self._handback[sender]

    def hand_back(self, now: float) -> None:
        """Send returning replicas the records they hold no confirmed copy of: at most
        `HANDBACK_BURST` per replica per `HANDBACK_PACE`, each again after `put_timeout` until
        the replica acknowledges it (`handed_back`)."""
        if now < self.handback_at:
            return
        nxt = INF
        for n, pending in self._handback.items():
            sent = 0
            while pending:  # in due order: a record sent moves to the end
                tid, due = next(iter(pending.items()))
                if due > now:
                    nxt = min(nxt, due)
                    break
                if sent == HANDBACK_BURST:
                    nxt = min(nxt, now + HANDBACK_PACE)
                    break
                rec = self.store.records.get(tid)
                if rec is None or n not in rec.replicas:
                    del pending[tid]  # collected, or it is no longer a replica of it
                    continue
                self.ctx.send_to(n, TaskPut(rec))
                self.ctx.stats["rejoin_pushes"] += 1
                pending[tid] = now + self.ctx.config.put_timeout
                pending.move_to_end(tid)
                sent += 1
        for n in [n for n, pending in self._handback.items() if not pending]:
            del self._handback[n]
        self.handback_at = nxt

"""The node as the owner of task records: it keeps replicas in step, negotiates placement, watches
the run and records the result exactly once.

A record lives on the nodes of its replica list (chosen by consistent hashing at submission).
Its owner is the first of them that is live in this node's membership view; when the owner dies
the next replica finds itself first and carries on from the replicated state (takeover). The
owner alone writes new versions, pushes each to every replica until acknowledged, and replaces
replicas that failed (repair). Attempt numbers fence runs: a report is accepted only from the
node and attempt the record names, so a late result from a node declared dead is refused.
"""

from __future__ import annotations

import collections
import dataclasses
import heapq
import math
from collections import OrderedDict
from dataclasses import dataclass, field

from agent import task_states
from agent.context import Context
from agent.policies import Policy
from agent.policies.base import Candidate
from agent.records import could_run, newer, plausible
from gossip.messages import (
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Release,
    ReportAck,
    Status,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskPut,
    TaskPutAck,
    TaskRecord,
    TaskReport,
    TaskState,
)

INF = math.inf
# Handing records back to a returning replica: at most this many puts to it per pace, so a
# burst never overflows the transport's bounded queue for a peer whose connection is not up yet
HANDBACK_BURST = 16
HANDBACK_PACE = 0.05  # seconds
COLLECTED = "finished and collected"  # a put's refusal: the task ended, its record is gone
FULL = "holds too many unfinished tasks"
NOT_OWNER = "not the owner"  # a cancel's refusal by a replica that does not drive the record


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of a collected record: enough to refuse to bring it back."""

    state: TaskState
    version: int
    until: float  # forgotten then


@dataclass(slots=True)
class _Round:
    attempt: int
    no: int
    asked: list[Candidate]
    deadline: float
    bids: dict[str, Bid] = field(default_factory=dict)


@dataclass(slots=True)
class _Drive:
    """Owner-side working state of one record (not replicated; rebuilt after a takeover)."""

    due: float = INF
    round: _Round | None = None
    rounds: int = 0
    next_try: float = 0.0
    backoff: float = 0.0
    award_sent: float = 0.0
    award_tries: int = 0
    award_round: int = 0  # the negotiation round whose winner the award went to
    runner_knows: tuple[str, ...] = ()  # the replica list the runner was last sent
    runner_heard: float = 0.0
    runner_lost: float = INF  # when this owner first saw the runner failed (or left)
    acked: dict[str, int] = field(default_factory=dict)  # replica -> version it confirmed
    next_push: float = 0.0
    waiting: set[str] = field(default_factory=set)  # runner addrs waiting for a result ack
    cancels: list[tuple[str, int]] = field(default_factory=list)  # (client addr, req) to answer
    synced: bool = False  # every live replica confirmed our copy since we (re)started driving it


class Owner:
    def __init__(self, ctx: Context, policy: Policy) -> None:
        self.ctx = ctx
        self.policy = policy
        self.store: dict[str, TaskRecord] = {}
        self.drives: dict[str, _Drive] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = 0
        self._epoch = -1
        self._live: set[str] | None = None  # the live set at the last membership check
        # results this node recorded: (task, attempt, runner, state), for checkers. A result is
        # recorded when every live replica holds it (see `_drive`), not when it is written here.
        self.committed_results: list[tuple[str, int, str, TaskState]] = []
        self._recorded: set[str] = set()
        # retention: when each terminal record was first held terminal here (oldest first), the
        # records not yet terminal, and what is left of collected ones
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._active: dict[str, str] = {}  # unfinished record ids -> their submitter
        self._active_by: collections.Counter[str] = collections.Counter()  # submitter -> count
        self.tombstones: OrderedDict[str, Tombstone] = OrderedDict()
        # records to hand back to each replica that came back live, record id -> when to
        # (re-)send it, in that order; an entry leaves when the replica confirms the record
        self._handback: dict[str, OrderedDict[str, float]] = {}
        self._handback_at = INF  # when `_hand_back` has something to send next
        self.in_minority = False  # this node sees no majority of the cluster alive
        self._majority_since = -INF  # when it last saw a majority again

    # ------------------------------------------------------------------ timers

    def _wake(self, tid: str, t: float) -> None:
        d = self.drives.get(tid)
        if d is None or t >= d.due:
            return
        d.due = t
        self._timer_seq += 1
        heapq.heappush(self._timers, (t, self._timer_seq, tid))

    def next_wakeup(self) -> float:
        if self.ctx.view.live_epoch != self._epoch:
            return -INF  # the live set changed: look at our records now (`check_membership`)
        t = self._next_collection()
        while self._timers:
            due, _, tid = self._timers[0]
            d = self.drives.get(tid)
            if d is not None and d.due == due:
                return min(t, due)
            heapq.heappop(self._timers)
        return min(t, self._handback_at)

    # ------------------------------------------------------------------ retention

    def _put_in_store(self, now: float, rec: TaskRecord) -> None:
        self.store[rec.id] = rec
        if rec.state.terminal:
            self._deactivate(rec.id)
            self._ended.setdefault(rec.id, now)
        elif rec.id not in self._active:
            self._active[rec.id] = rec.spec.submitter
            self._active_by[rec.spec.submitter] += 1

    def _deactivate(self, tid: str) -> None:
        submitter = self._active.pop(tid, None)
        if submitter is not None:
            self._active_by[submitter] -= 1
            if not self._active_by[submitter]:
                del self._active_by[submitter]

    def _next_collection(self) -> float:
        cfg = self.ctx.config
        t = INF
        if self._ended:
            t = next(iter(self._ended.values())) + cfg.retention
        if self.tombstones:
            t = min(t, next(iter(self.tombstones.values())).until)
        return t

    def collect(self, now: float) -> None:
        """Free finished records `retention` after they ended here, keeping a tombstone that
        refuses their return (a stale copy pushed again, a late report) for
        `tombstone_retention`. A record still being driven (a replica has not confirmed the
        result yet) waits another `retention`."""
        cfg = self.ctx.config
        due = []
        for tid, t in self._ended.items():
            if t + cfg.retention > now:
                break
            due.append(tid)
        for tid in due:
            del self._ended[tid]
            if tid in self.drives:
                self._ended[tid] = now
                continue
            self._bury(now, tid, self.store.pop(tid))
        while self.tombstones and next(iter(self.tombstones.values())).until <= now:
            self.tombstones.popitem(last=False)

    def _bury(self, now: float, tid: str, rec: TaskRecord) -> None:
        self._recorded.discard(tid)
        self._deactivate(tid)
        self._ended.pop(tid, None)
        self.tombstones[tid] = Tombstone(rec.state, rec.version,
                                         now + self.ctx.config.tombstone_retention)
        self.ctx.stats["records_collected"] += 1
        while len(self.tombstones) > self.ctx.config.max_tombstones:
            self.tombstones.popitem(last=False)
            self.ctx.stats["tombstones_dropped"] += 1

    # ------------------------------------------------------------------ the record store

    def hold(self, now: float, rec: TaskRecord) -> bool:
        """Keep `rec` if it is newer than our copy; start driving it if we own it."""
        old = self.store.get(rec.id)
        me = self.ctx.node_id
        if rec.id in self.tombstones:
            self.ctx.stats["puts_for_collected"] += 1  # it ended and was collected: stays so
            return False
        if old is None and me not in rec.replicas:
            # Never start holding a record that does not list us (e.g. a copy sent back to a
            # submitter whose put was answered late): nobody would keep it up to date, and if
            # every listed replica later failed we would take it over (`Context.owner_of`) and
            # run the task again from that stale copy.
            return False
        if not plausible(rec, old):
            self.ctx.stats["implausible_task_versions"] += 1
            return False
        if not newer(rec, old):
            return False
        self._put_in_store(now, rec)
        if old is not None and old.replicas != rec.replicas and self.ctx.owner_of(old) == me:
            # Another owner's lineage won (the two sides of a partition, or an owner that was
            # wrongly declared dead): pass the winner on to the replicas we kept (best effort:
            # a copy that misses it is an orphan whose owner, we, holds the winner, so it is
            # corrected as soon as anyone takes it over, see `_drive`).
            for n in old.replicas:
                if n not in rec.replicas and n != me:
                    self.ctx.send_to(n, TaskPut(rec))
        d = self.drives.get(rec.id)
        if d is not None:
            self._release_round(d)  # someone else moved the task on: re-read it from scratch
            d.acked.clear()
            d.synced = False
            d.runner_heard = now
            d.runner_lost = INF  # the record may name another runner now
            self._wake(rec.id, now)
        elif self.ctx.owner_of(rec) == self.ctx.node_id:
            self._adopt(now, rec.id)
        return True

    def _adopt(self, now: float, tid: str) -> None:
        if tid not in self.drives:
            self.drives[tid] = _Drive(runner_heard=now)
            self.ctx.stats["records_adopted"] += 1
        self._wake(tid, now)

    def write(self, now: float, rec: TaskRecord, **changes) -> TaskRecord:
        """A new version of a record we own; pushed to the replicas at the next wake."""
        if "state" in changes:
            task_states.check(rec.id, rec.state, changes["state"])
        new = dataclasses.replace(rec, version=rec.version + 1, writer=self.ctx.node_id, **changes)
        self._put_in_store(now, new)
        d = self.drives.get(rec.id)
        if d is not None:
            d.next_push = now
            self._wake(rec.id, now)
        return new

    def on_put(self, now: float, sender_addr: str, put: TaskPut) -> None:
        rec = put.record
        old = self.store.get(rec.id)
        if old is not None and old.spec != rec.spec:
            self.ctx.stats["put_conflicts"] += 1
            self.ctx.send(sender_addr, TaskPutAck(rec.id, old.version, old.state, ok=False,
                                                  error="the id is taken by a different task"))
            return
        tomb = self.tombstones.get(rec.id)
        if tomb is not None:
            # ended and collected here: say so, so that a stale pusher drops its copy too
            # (`on_put_ack`) instead of running the task again from it
            self.ctx.stats["puts_for_collected"] += 1
            self.ctx.send(sender_addr, TaskPutAck(rec.id, tomb.version, tomb.state, ok=False,
                                                  error=COLLECTED))  # fmt: skip
            return
        if old is None and not rec.state.terminal and (
            len(self._active) >= self.ctx.config.max_active_records
        ):
            self.ctx.stats["records_refused"] += 1
            self.ctx.send(sender_addr, TaskPutAck(rec.id, 0, TaskState.PENDING, ok=False,
                                                  error=f"this agent {FULL} (max_active_records)"))
            return
        who = rec.spec.submitter
        if old is None and not rec.state.terminal and who and (
            self._active_by[who] >= self.ctx.config.max_tasks_per_client
        ):
            # one client must not fill an agent's share of the cluster by itself
            self.ctx.stats["records_refused_per_client"] += 1
            self.ctx.send(sender_addr, TaskPutAck(rec.id, 0, TaskState.PENDING, ok=False, error=(
                f"client {who!r} already has {self._active_by[who]} unfinished tasks held by "
                f"this agent (max_tasks_per_client)")))
            return
        if old is None and self.ctx.node_id not in rec.replicas:
            # a hint (see `_push`) and we hold no copy of our own: nothing to reconcile here,
            # and keeping one would leave a copy that no owner keeps up to date
            self.ctx.send(sender_addr, TaskPutAck(rec.id, rec.version, rec.state))
            return
        if not self.hold(now, rec) and old is None:
            return  # refused: nothing to acknowledge
        mine = self.store[rec.id]
        self.ctx.send(sender_addr, TaskPutAck(rec.id, mine.version, mine.state))
        if mine != rec:
            # We keep a copy that outranks the one pushed (another owner wrote it: a takeover,
            # or the two sides of a partition). The ack alone cannot say so when both have the
            # same version and state, so hand the pusher our copy: it adopts it (`hold`) and
            # the two lineages converge instead of each believing the replica holds its own.
            self.ctx.send(sender_addr, TaskGetReply(rec.id, 0, mine))

    def on_put_ack(self, now: float, sender: str, sender_addr: str, a: TaskPutAck) -> None:
        d = self.drives.get(a.task_id)
        rec = self.store.get(a.task_id)
        pending = self._handback.get(sender)
        if pending and a.task_id in pending and (
            rec is None or not a.ok or a.version >= rec.version
        ):
            del pending[a.task_id]  # it holds the record (or refused it for good)
            if not pending:
                del self._handback[sender]
        if d is None or rec is None:
            return
        if not a.ok and a.error == COLLECTED and a.state.terminal and (
            sender in rec.replicas or sender in self._hints(rec)
        ):
            # the task ended, was recorded and collected there: our copy is stale (terminal
            # is final), so collect it too rather than drive it on
            self.drives.pop(a.task_id)
            self._release_round(d)
            del self.store[a.task_id]
            self._bury(now, a.task_id, dataclasses.replace(rec, state=a.state,
                                                           version=a.version))
            self.ctx.stats["stale_copies_collected"] += 1
            return
        if a.version > rec.version or (a.version == rec.version and a.state != rec.state) or (
            a.state.terminal and not rec.state.terminal
        ):
            # Its copy outranks ours (`agent.records.newer`): fetch it. This is NOT an
            # acknowledgement of our version (counting it as one let an owner that had been
            # paused past failure detection "replicate" and record a result for an attempt the
            # others had long replaced).
            self.ctx.send(sender_addr, TaskGet(a.task_id, 0))
            return
        d.acked[sender] = max(d.acked.get(sender, 0), a.version)
        if self._replicated(rec, d):
            self._wake(a.task_id, now)

    def on_get(self, sender_addr: str, g: TaskGet) -> None:
        self.ctx.send(sender_addr, TaskGetReply(g.task_id, g.req, self.store.get(g.task_id)))

    def _replicated(self, rec: TaskRecord, d: _Drive, hints: bool = False) -> bool:
        """Every live replica (and with `hints`, every live preferred node) confirmed `rec`."""
        c = self.ctx
        nodes = (*rec.replicas, *self._hints(rec)) if hints else rec.replicas
        return all(
            n == c.node_id or d.acked.get(n, 0) >= rec.version or not c.is_live(n)
            for n in nodes
        )

    def _hints(self, rec: TaskRecord) -> list[str]:
        """Nodes consistent hashing now prefers for the record that are not its replicas."""
        return [n for n in self.ctx.ring().preference(rec.id, self.ctx.config.replicas)
                if n not in rec.replicas]  # fmt: skip

    # ------------------------------------------------------------------ membership changes

    def check_membership(self, now: float) -> None:
        """After the live set changed: adopt records we now own, drop the ones we no longer do,
        and look again at every record we drive (runner or replica may have died)."""
        epoch = self.ctx.view.live_epoch
        if epoch == self._epoch:
            return
        self._epoch = epoch
        me = self.ctx.node_id
        live = set(self.ctx.view.live_nodes())
        back = live - self._live if self._live is not None else set()
        self._live = live
        for n in [n for n in self._handback if n not in live]:
            del self._handback[n]  # gone again: handed everything afresh when it is back
        for n in back:
            self._handback.pop(n, None)  # it came back with nothing: start over
        for tid, rec in self.store.items():
            returned = [n for n in rec.replicas if n in back] if back else []
            owner = self.ctx.owner_of(rec)
            for n in returned:
                # A replica that is live again may have lost its copy (a restarted process
                # keeps nothing): hand it ours, so that if it is first on the list — the owner
                # every node now defers to — it holds the record and drives it (re-confirming
                # with the others first) instead of leaving it stranded. Finished records too:
                # handed back to nobody, a finished record was gone once each of its replicas
                # had restarted in turn (the soak lost 421 of 1,523 that way). Handed back
                # paced and until confirmed (`_hand_back`): sent once, all in one burst, most
                # were dropped by the transport's bounded queue and the soak still lost 238.
                if owner != me:
                    self._handback.setdefault(n, OrderedDict())[tid] = now
                    self._handback_at = now
            if owner == me:
                self._adopt(now, tid)
                d = self.drives[tid]
                for n in returned:  # the owner pushes until it confirms (see `_drive`)
                    d.acked.pop(n, None)
            elif tid in self.drives:
                d = self.drives.pop(tid)
                self._release_round(d)
                self.ctx.stats["records_handed_over"] += 1

    def deciding(self, now: float) -> bool:
        """Whether this node may move tasks on: it sees a majority of the cluster's members
        (every member not known to have left, failed ones included, this node too) alive, and
        has for `partition_grace`. Only one side of a partition can, so only one side places,
        re-places or records results. Back in a majority, every record is confirmed with its
        replicas and preferred nodes before anything is decided on it: the other side may have
        moved it on meanwhile."""
        c = self.ctx
        if c.config.minority_decides:
            return True
        minority = 2 * c.view.count(Status.ALIVE) <= c.view.members_not_left()
        if minority != self.in_minority:
            self.in_minority = minority
            if minority:
                c.stats["minority_entered"] += 1
            else:
                self._majority_since = now
                for d in self.drives.values():
                    d.synced = False
                    d.acked.clear()
        return not minority and now >= self._majority_since + c.config.partition_grace

    def _hand_back(self, now: float) -> None:
        """Send returning replicas the records they hold no confirmed copy of: at most
        `HANDBACK_BURST` per replica per `HANDBACK_PACE`, each again after `put_timeout` until
        the replica acknowledges it (`on_put_ack`)."""
        if now < self._handback_at:
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
                rec = self.store.get(tid)
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
        self._handback_at = nxt

    # ------------------------------------------------------------------ driving one record

    def tick(self, now: float) -> None:
        self.check_membership(now)
        self.collect(now)
        self._hand_back(now)
        while self._timers and self._timers[0][0] <= now:
            t, _, tid = heapq.heappop(self._timers)
            d = self.drives.get(tid)
            if d is None or d.due != t:
                continue
            d.due = INF
            if now - t > self.ctx.config.put_timeout:
                # Woken far later than asked: this node was stopped (or starved) meanwhile, and
                # others may have taken the record over. Re-confirm our copy before acting on
                # it: a resumed owner used to award from its stale round, running the task
                # again, before it learnt that it had been replaced.
                d.synced = False
                d.acked.clear()  # the confirmations we hold are from before the stop
                self.ctx.stats["late_wakeups"] += 1
            self._drive(now, tid, d)

    def _drive(self, now: float, tid: str, d: _Drive) -> None:
        c = self.ctx
        rec = self.store[tid]
        if c.owner_of(rec) != c.node_id:
            self.drives.pop(tid, None)
            self._release_round(d)
            return
        if not self.deciding(now):
            # look again later: suspicions that clear do not change the live set
            self._wake(tid, max(now + c.config.put_timeout,
                                self._majority_since + c.config.partition_grace))
            return
        if not d.synced:
            # We just took the record over (or learnt that another owner moved it on): decide
            # nothing until every live replica has confirmed our copy. A replica holding one
            # that outranks ours answers with it instead (`on_put_ack` fetches it), so a new
            # owner does not negotiate, re-place or record a result from a stale copy (one
            # that missed its predecessor's last writes, or a copy left from before a pause or
            # a partition): it used to act at once, placing the task a second time.
            # The preferred nodes are asked too: a copy whose listed replicas have all failed
            # since it was written (a replica dropped while it was paused, that later finds
            # itself first) learns there that the record lives on elsewhere.
            self._push(now, rec, d)
            if not self._replicated(rec, d, hints=True):
                self._wake(tid, max(d.next_push, now))
                return
            d.synced = True
        rec = self._repair(now, rec)
        st = rec.state
        if st == TaskState.RUNNING and rec.node_addr and rec.replicas != d.runner_knows:
            # The runner sends its heartbeats to the first live replica of the record it was
            # awarded. After a takeover or a repair that may no longer be us (or anyone who
            # owns the record): without this the owner heard nothing and re-placed a healthy
            # run after `runner_silence`. A repeated award tells it the current record.
            c.send(rec.node_addr, Award(rec, d.award_round))
            d.runner_knows = rec.replicas
        if st == TaskState.PENDING:
            if d.round is not None:
                if now >= d.round.deadline:
                    self._decide(now, tid, d)
            elif now >= d.next_try:
                self._start_round(now, rec, d)
        elif st in (TaskState.PLACED, TaskState.RUNNING):
            self._watch_runner(now, rec, d)
        rec = self.store[tid]
        pushed = self._push(now, rec, d)
        if rec.state.terminal and self._replicated(rec, d):
            # Only now is the result recorded: every live replica holds it. Runners and
            # cancelling clients are answered only from here, so an owner that dies (or turns
            # out to be stale) before replicating cannot have promised a result that is lost.
            if tid not in self._recorded:
                self._recorded.add(tid)
                self.committed_results.append((tid, rec.attempt, rec.node, rec.state))
            for addr in sorted(d.waiting):  # sorted: a set's order varies between processes
                c.send(addr, ReportAck(tid, rec.attempt, keep=False))
            d.waiting.clear()
            if d.cancels and rec.state == TaskState.CANCELLED and rec.node_addr:
                c.send(rec.node_addr, ReportAck(tid, rec.attempt, keep=False))
            for addr, req in d.cancels:
                ok = rec.state == TaskState.CANCELLED
                c.send(addr, TaskCancelReply(tid, req, ok, rec.state,
                                             "" if ok else f"already {rec.state.label}"))
            d.cancels.clear()
        if rec.state.terminal and self._replicated(rec, d) and not d.waiting:
            self.drives.pop(tid, None)  # done: nothing left to do for it
            return
        # when to look again
        t = INF
        if pushed:
            t = d.next_push
        if rec.state == TaskState.PENDING:
            t = min(t, d.round.deadline if d.round else d.next_try)
        elif d.runner_lost < INF:  # placed or running on a node that failed
            t = min(t, d.runner_lost + c.config.partition_grace)
        elif rec.state == TaskState.PLACED:
            t = min(t, d.award_sent + c.config.award_timeout)
        elif rec.state == TaskState.RUNNING:
            t = min(t, d.runner_heard + c.config.runner_silence)
        self._wake(tid, max(t, now))

    def _repair(self, now: float, rec: TaskRecord) -> TaskRecord:
        """Replace replicas that failed or left with the next live nodes on the ring."""
        c = self.ctx
        want = c.config.replicas
        keep = [n for n in rec.replicas if c.is_live(n)]
        if c.node_id not in keep:
            keep.insert(0, c.node_id)
        if len(keep) >= want and len(keep) == len(rec.replicas):
            return rec
        for n in c.ring().preference(rec.id, want + len(rec.replicas) + 1):
            if len(keep) >= want:
                break
            if n not in keep:
                keep.append(n)
        if tuple(keep) == rec.replicas:
            return rec
        c.stats["replica_repairs"] += 1
        return self.write(now, rec, replicas=tuple(keep))

    def _push(self, now: float, rec: TaskRecord, d: _Drive) -> bool:
        """Send the current version to replicas that have not confirmed it. True if any is due."""
        c = self.ctx
        # Besides the replicas, the nodes consistent hashing now prefers for the record: after
        # a partition each side may have repaired the replica set with its own nodes, and the
        # two lineages would never meet again; the preferred nodes are common to both, keep
        # the copy that wins (`newer`) and send it back to the loser (`on_put`).
        missing = [n for n in (*rec.replicas, *self._hints(rec))
                   if n != c.node_id and d.acked.get(n, 0) < rec.version and c.is_live(n)]
        if not missing:
            return False
        if now >= d.next_push:
            for n in missing:
                c.send_to(n, TaskPut(rec))
            d.next_push = now + c.config.put_timeout
        return True

    # ------------------------------------------------------------------ negotiation

    def _candidates(self, rec: TaskRecord) -> list[Candidate]:
        """Alive nodes that could run the task; those whose gossiped allocation still leaves
        room for it first-class: if any has room, only they are offered to the policy (asking
        a node that gossip says is full wastes a round), else every feasible node is (gossip
        may be stale)."""
        c = self.ctx
        out = []
        for n in [c.node_id, *c.view.live_nodes()]:
            if n != c.node_id and c.view.status_of(n) != Status.ALIVE:
                continue  # a suspect is not worth a bid round trip
            r = c.view.record_of(n)
            addr = c.addr if n == c.node_id else c.view.addr_of(n)
            if addr and could_run(r, rec.spec):
                out.append(Candidate(n, addr, r))
        s = rec.spec
        roomy = [x for x in out if x.record.cpus - x.record.alloc_cpus + 1e-9 >= s.cpus
                 and x.record.memory - x.record.alloc_memory >= s.memory
                 and x.record.gpus - x.record.alloc_gpus >= s.gpus]  # fmt: skip
        return roomy or out

    def _start_round(self, now: float, rec: TaskRecord, d: _Drive) -> None:
        c = self.ctx
        cands = self._candidates(rec)
        asked = self.policy.choose(rec.spec, cands, c.config.bids, c.rng) if cands else []
        if not asked:
            c.stats["no_candidates"] += 1
            self._back_off(now, d)
            return
        d.rounds += 1
        rnd = _Round(rec.attempt + 1, d.rounds, asked, now + c.config.bid_timeout)
        d.round = rnd
        s = rec.spec
        q = BidRequest(rec.id, rnd.attempt, rnd.no, s.cpus, s.memory, s.gpus, dict(s.labels),
                       s.expected)  # fmt: skip
        for cand in asked:
            c.send(cand.addr, q)
        c.stats["bid_requests"] += len(asked)

    def _back_off(self, now: float, d: _Drive) -> None:
        cfg = self.ctx.config
        d.backoff = min(cfg.backoff_max, max(cfg.backoff_min, d.backoff * 2))
        d.next_try = now + d.backoff * self.ctx.rng.uniform(0.5, 1.0)

    def on_bid(self, now: float, sender: str, sender_addr: str, b: Bid) -> None:
        c = self.ctx
        d = self.drives.get(b.task_id)
        rnd = d.round if d else None
        if rnd is None or rnd.attempt != b.attempt or rnd.no != b.round or not any(
            cand.node == sender for cand in rnd.asked
        ):
            # a late bid for a closed round, or one never asked for: free its lease at once
            c.stats["unsolicited_bids"] += 1
            if b.ok:
                c.send(sender_addr, Release(b.task_id, b.attempt, b.round))
            return
        rnd.bids[sender] = b
        if len(rnd.bids) == len(rnd.asked) and now <= rnd.deadline:
            self._decide(now, b.task_id, d)
        # past the deadline the round should be closed already (we were stopped): the drive
        # decides, after re-confirming our copy (`tick`)

    def _decide(self, now: float, tid: str, d: _Drive) -> None:
        c = self.ctx
        rnd = d.round
        d.round = None
        rec = self.store[tid]
        if rnd is None or rec.state != TaskState.PENDING:
            return
        by_node = {cand.node: cand for cand in rnd.asked}
        if now >= rnd.deadline - c.config.bid_timeout + c.config.lease:
            # every yes-bid's lease has run out (we were held up): ask again, never award on
            # a reservation the bidder no longer holds
            for n, b in rnd.bids.items():
                if b.ok:
                    c.send(by_node[n].addr, Release(tid, rnd.attempt, rnd.no))
            c.stats["rounds_expired"] += 1
            d.next_try = now
            self._wake(tid, now)
            return
        yes = [rnd.bids[cand.node] for cand in rnd.asked
               if cand.node in rnd.bids and rnd.bids[cand.node].ok]
        if not yes:
            c.stats["rounds_without_room"] += 1
            self._back_off(now, d)
            self._wake(tid, d.next_try)
            return
        win = self.policy.pick(rec.spec, yes, c.rng)
        winner = next(n for n, b in rnd.bids.items() if b is win)
        for n, b in rnd.bids.items():
            if b.ok and n != winner:
                c.send(by_node[n].addr, Release(tid, rnd.attempt, rnd.no))
        rec = self.write(now, rec, state=TaskState.PLACED, attempt=rnd.attempt, node=winner,
                         node_addr=by_node[winner].addr, placed=now,
                         node_generation=c.view.generation_of_member(winner) or 0)  # fmt: skip
        d.backoff = 0.0
        d.award_tries = 1
        d.award_sent = now
        d.runner_heard = now
        d.runner_lost = INF
        c.send(by_node[winner].addr, Award(rec, rnd.no))
        c.stats["awards"] += 1
        d.award_round = rnd.no
        d.runner_knows = rec.replicas
        self._wake(tid, now)

    def _release_round(self, d: _Drive) -> None:
        rnd, d.round = d.round, None
        if rnd is None:
            return
        for n, b in rnd.bids.items():
            if b.ok:
                addr = next(cand.addr for cand in rnd.asked if cand.node == n)
                self.ctx.send(addr, Release(b.task_id, b.attempt, b.round))

    # ------------------------------------------------------------------ watching the run

    def _watch_runner(self, now: float, rec: TaskRecord, d: _Drive) -> None:
        c = self.ctx
        st = c.view.status_of(rec.node) if rec.node != c.node_id else Status.ALIVE
        # The runner restarted since the award (a run ends with its process). Seen only in the
        # generation when the new life was up before anyone watched, as after a takeover (the
        # new owner confirms the record with the replicas first): watching the status alone,
        # it saw a live runner and re-placed only after `runner_silence`.
        restarted = (c.view.generation_of_member(rec.node) or 0) > rec.node_generation
        if restarted or st in (Status.DEAD, Status.LEFT, None):
            if d.runner_lost == INF:
                d.runner_lost = now
            if now < d.runner_lost + c.config.partition_grace:
                return  # woken then (see `_drive`); a majority lost meanwhile stops us
            c.stats["runner_lost"] += 1
            how = "restarted" if restarted else "left" if st == Status.LEFT else "failed"
            self._replace(now, rec, d, f"node {rec.node} {how}")
            return
        d.runner_lost = INF
        if rec.state == TaskState.PLACED and now >= d.award_sent + c.config.award_timeout:
            if d.award_tries >= c.config.award_retries:
                c.stats["awards_unconfirmed"] += 1
                self._replace(now, rec, d, "award never confirmed")
                return
            d.award_tries += 1
            d.award_sent = now
            # name the round the winner's lease is under (round 0 made every re-sent award look
            # lease-less: counted stale, and refused when the node was full with that lease)
            c.send(rec.node_addr, Award(rec, d.award_round))
            return
        if rec.state == TaskState.RUNNING and now >= d.runner_heard + c.config.runner_silence:
            c.stats["runner_silent"] += 1
            self._replace(now, rec, d, f"node {rec.node} stopped reporting")

    def _replace(self, now: float, rec: TaskRecord, d: _Drive, why: str) -> None:
        """Back to negotiation; the next placement is a new attempt (the old one is fenced)."""
        if rec.node_addr:
            self.ctx.send(rec.node_addr, ReportAck(rec.id, rec.attempt, keep=False))
        self.write(now, rec, state=TaskState.PENDING, node="", node_addr="", node_generation=0,
                   reason=why)
        d.next_try = now
        d.backoff = 0.0
        self.ctx.stats["replacements"] += 1

    def on_award_ack(self, now: float, sender: str, a: AwardAck) -> None:
        c = self.ctx
        rec = self.store.get(a.task_id)
        d = self.drives.get(a.task_id)
        if rec is None or d is None or rec.attempt != a.attempt or rec.node != sender:
            c.stats["stale_award_acks"] += 1
            return
        if rec.state != TaskState.PLACED:
            return  # a duplicate
        if a.ok:
            d.runner_heard = now
            self.write(now, rec, state=TaskState.RUNNING, started=a.started, reason="")
        else:
            c.stats["awards_refused"] += 1
            self.write(now, rec, state=TaskState.PENDING, node="", node_addr="",
                       node_generation=0, reason=f"award refused: {a.reason}")  # fmt: skip
            d.next_try = now
        self._wake(a.task_id, now)

    def on_report(self, now: float, sender: str, sender_addr: str, r: TaskReport) -> None:
        c = self.ctx
        rec = self.store.get(r.task_id)
        d = self.drives.get(r.task_id)
        done = rec is not None and d is None and rec.state.terminal and (
            c.owner_of(rec) == c.node_id
        )  # fmt: skip
        if rec is None and r.task_id in self.tombstones:
            # ended, recorded and collected: whatever this run is, nobody wants it
            c.stats["reports_for_collected"] += 1
            c.send(sender_addr, ReportAck(r.task_id, r.attempt, keep=False))
            return
        if rec is None or d is None and not done:
            c.stats["reports_not_owner"] += 1  # another replica owns it (the runner asks all)
            return
        current = rec.attempt == r.attempt and rec.node == sender
        if not current or (rec.state.terminal and rec.finished != r.finished):
            c.stats["stale_reports"] += 1
            c.send(sender_addr, ReportAck(r.task_id, r.attempt, keep=False))
            return
        if d is None:
            # The result is recorded and replicated (we stopped driving it): a repeat whose
            # ack was lost. Before, a finished record's owner ignored it and a runner that had
            # been cut off re-sent its report forever.
            c.send(sender_addr, ReportAck(r.task_id, r.attempt, keep=False))
            return
        if not rec.state.terminal and not task_states.reportable(rec.state, r.state):
            # a runner only says it started or how its run ended; anything else (a peer
            # lying, or a bug) must not move the record, and is not taken as a sign of life
            c.stats["reports_refused"] += 1
            return
        d.runner_heard = now
        if r.state == TaskState.RUNNING:
            if rec.state == TaskState.PLACED:
                self.write(now, rec, state=TaskState.RUNNING, started=r.started)
            c.send(sender_addr, ReportAck(r.task_id, r.attempt, keep=True))
            return
        if not rec.state.terminal and not (self.deciding(now) and d.synced):
            # Recorded here, the other side of a partition (or an owner we have not yet
            # confirmed our copy with) could record another result for the task: the runner
            # re-sends its report until it is taken.
            c.stats["reports_deferred"] += 1
            return
        if not rec.state.terminal:
            self.write(now, rec, state=r.state, exit_code=r.exit_code, reason=r.reason,
                       started=r.started or rec.started, finished=r.finished,
                       stdout=r.stdout, stderr=r.stderr)  # fmt: skip
            c.stats["results_recorded"] += 1
        d.waiting.add(sender_addr)  # acknowledged once every replica has the result
        self._wake(r.task_id, now)

    # ------------------------------------------------------------------ cancellation

    def on_cancel(self, now: float, sender_addr: str, q: TaskCancel) -> None:
        c = self.ctx
        rec = self.store.get(q.task_id)
        tomb = self.tombstones.get(q.task_id)
        if rec is None and tomb is not None:
            c.send(sender_addr, TaskCancelReply(q.task_id, q.req, False, tomb.state,
                                                f"already {tomb.state.label}"))  # fmt: skip
            return
        if rec is None or q.task_id not in self.drives and not (
            rec.state.terminal and c.owner_of(rec) == c.node_id
        ):
            c.send(sender_addr, TaskCancelReply(q.task_id, q.req, False,
                                                error=NOT_OWNER))  # fmt: skip
            return
        if rec.state.terminal:
            c.send(sender_addr, TaskCancelReply(q.task_id, q.req, False, rec.state,
                                                f"already {rec.state.label}"))  # fmt: skip
            return
        d = self.drives[q.task_id]
        if not (self.deciding(now) and d.synced):
            c.send(sender_addr, TaskCancelReply(q.task_id, q.req, False, rec.state, error=(
                "its owner sees no majority of the cluster (a partition?): try again later"
                if self.in_minority else "its owner is confirming the record: try again")))
            return
        self._release_round(d)
        self.write(now, rec, state=TaskState.CANCELLED, reason="cancelled on request",
                   finished=now)  # fmt: skip
        c.stats["cancelled"] += 1
        # The client is answered, and the runner told to stop, once every live replica holds
        # the cancellation (`_drive`). Doing both at once told the client "cancelled" even when
        # this owner died before pushing it (the next owner then ran the task to completion),
        # and killed a run that the next owner still waited on until `runner_silence`.
        d.cancels.append((sender_addr, q.req))

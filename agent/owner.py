"""The node as the owner of task records: it keeps replicas in step, negotiates placement, watches
the run and records the result exactly once.

A record lives on the nodes of its replica list (chosen by consistent hashing at submission).
Its owner is the first of them that is live in this node's membership view; when the owner dies
the next replica finds itself first and carries on from the replicated state (takeover). The
owner alone writes new versions, pushes each to every replica until acknowledged, and replaces
replicas that failed (repair). Attempt numbers fence runs: a report is accepted only from the
node and attempt the record names, so a late result from a node declared dead is refused.

This module decides when each record moves on, and applies what runners and clients say; the
mechanics are in `task_store` (holding records), `replication` (keeping the copies in step),
`negotiation` (bid rounds) and `runner_watch` (awards, and giving up on a runner).
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from dataclasses import dataclass, field

from agent import task_states
from agent.context import Context
from agent.messages import (
    AwardAck,
    Bid,
    ReportAck,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskPut,
    TaskPutAck,
    TaskReport,
)
from agent.negotiation import DIRECT, Negotiation, Negotiator
from agent.policies import Policy
from agent.policies.base import Candidate
from agent.records import newer, plausible
from agent.replication import ReplicaSync, Replication
from agent.runner_watch import RunnerWatch, RunnerWatcher
from agent.task_store import TaskStore
from agent.tasks import TaskRecord, TaskState
from gossip.messages import Status

INF = math.inf
NOT_OWNER = "not the owner"  # a cancel's refusal by a replica that does not drive the record


@dataclass(slots=True)
class _Drive:
    """Owner-side working state of one record (not replicated; rebuilt after a takeover), a
    part per concern."""

    due: float = INF  # when `tick` looks at it next (`_wake`)
    neg: Negotiation = field(default_factory=Negotiation)
    watch: RunnerWatch = field(default_factory=RunnerWatch)
    sync: ReplicaSync = field(default_factory=ReplicaSync)
    waiting: set[str] = field(default_factory=set)  # runner addrs waiting for a result ack
    entries: set[str] = field(default_factory=set)  # entries' addrs waiting (`on_put`)
    cancels: list[tuple[str, int]] = field(default_factory=list)  # (client addr, req) to answer
    # the attempt this owner awarded directly on a new submission before its replicas confirmed
    # it (`_drive`): the award goes out once they have; 0 = none
    award_held: int = 0


class Owner:
    def __init__(self, ctx: Context, policy: Policy) -> None:
        self.ctx = ctx
        self.store = TaskStore(ctx)
        self.replication = Replication(ctx, self.store)
        self.negotiator = Negotiator(ctx, policy)
        self.watcher = RunnerWatcher(ctx)
        self.drives: dict[str, _Drive] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._timer_seq = 0
        self._epoch = -1
        # results this node recorded: (task, attempt, runner, state), for checkers. A result is
        # recorded when every live replica holds it (see `_drive`), not when it is written here.
        self.committed_results: list[tuple[str, int, str, TaskState]] = []
        self.in_minority = False  # this node sees no majority of the cluster alive
        self._majority_since = -INF  # when it last saw a majority again
        self._failure_seen = -INF  # when it last saw a member declared failed
        self._live: set[str] | None = None

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
        t = self.store.next_collection()
        while self._timers:
            due, _, tid = self._timers[0]
            d = self.drives.get(tid)
            if d is not None and d.due == due:
                return min(t, due)
            heapq.heappop(self._timers)
        return min(t, self.replication.handback_at, self.replication.acks_at)

    # ------------------------------------------------------------------ holding and writing

    def hold(self, now: float, rec: TaskRecord) -> bool:
        """Keep `rec` if it is newer than our copy; start driving it if we own it."""
        old = self.store.records.get(rec.id)
        me = self.ctx.node_id
        if rec.id in self.store.tombstones:
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
        self.store.put(now, rec)
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
            self.negotiator.release(d.neg)  # someone else moved the task on: re-read it
            d.sync.forget()
            d.award_held = 0  # ...and did not place it where we were about to award it
            d.watch.runner_heard = now
            d.watch.runner_lost = INF  # the record may name another runner now
            self._wake(rec.id, now)
        elif self.ctx.owner_of(rec) == self.ctx.node_id:
            self._adopt(now, rec.id)
        return True

    def _adopt(self, now: float, tid: str) -> None:
        if tid not in self.drives:
            self.drives[tid] = _Drive(watch=RunnerWatch(runner_heard=now))
            self.ctx.stats["records_adopted"] += 1
        self._wake(tid, now)

    def write(self, now: float, rec: TaskRecord, **changes) -> TaskRecord:
        """A new version of a record we own; pushed to the replicas at the next wake — except
        that a run's start waits for the next push due (`put_timeout` after the placed
        version's): the replicas' placed copy already names the runner and the attempt, so a
        new owner finds the run from it (it re-sends the award, which the runner confirms),
        and a short run's start then travels with its result instead of costing a round of
        puts and acks of its own."""
        if "state" in changes:
            task_states.check(rec.id, rec.state, changes["state"])
        new = dataclasses.replace(rec, version=rec.version + 1, writer=self.ctx.node_id, **changes)
        self.store.put(now, new)
        d = self.drives.get(rec.id)
        if d is not None:
            if not (rec.state == TaskState.PLACED and new.state == TaskState.RUNNING):
                d.sync.next_push = now
            self._wake(rec.id, now)
        return new

    # ------------------------------------------------------------------ replication messages

    def on_put(self, now: float, sender: str, sender_addr: str, put: TaskPut) -> None:
        rec = put.record
        if self.replication.refuse_put(sender_addr, rec):
            return
        old = self.store.records.get(rec.id)
        if not self.hold(now, rec) and old is None:
            return  # refused: nothing to acknowledge
        d = self.drives.get(rec.id)
        if put.submission and d is not None and self.deciding(now):
            # An entry sent a new record to us, its owner, alone (`Requests.submit`): our
            # confirmation push is its replication, and we answer for every replica once
            # each has confirmed (`_drive`). Otherwise we answer for ourselves only, and the
            # entry asks the others.
            d.entries.add(sender_addr)
            self._wake(rec.id, now)
            return
        self.replication.confirm_put(now, sender, sender_addr, rec, first=old is None)

    def on_put_ack(self, now: float, sender: str, sender_addr: str, a: TaskPutAck) -> None:
        d = self.drives.get(a.task_id)
        rec = self.store.records.get(a.task_id)
        self.replication.handed_back(sender, a, rec)
        if d is None or rec is None:
            return
        if self.replication.collected_there(sender, a, rec):
            # the task ended, was recorded and collected there: our copy is stale (terminal
            # is final), so collect it too rather than drive it on
            self.drives.pop(a.task_id)
            self.negotiator.release(d.neg)
            self.store.bury(now, a.task_id, a.state, a.version)
            self.ctx.stats["stale_copies_collected"] += 1
            return
        if self.replication.take_ack(sender, sender_addr, a, rec, d.sync):
            self._wake(a.task_id, now)

    def on_get(self, sender_addr: str, g: TaskGet) -> None:
        rec = self.store.records.get(g.task_id)
        self.ctx.send(sender_addr, TaskGetReply(g.task_id, g.req, rec))

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
        if self._live is not None and any(self.ctx.view.status_of(n) == Status.DEAD
                                          for n in self._live - live):  # fmt: skip
            self._failure_seen = now  # (`deciding`)
        self._live = live
        back = self.replication.live_set_changed(live)
        for tid, rec in self.store.records.items():
            returned = [n for n in rec.replicas if n in back] if back else []
            owner = self.ctx.owner_of(rec)
            if owner != me:
                # A replica that is live again may have lost its copy (a restarted process
                # keeps nothing): hand it ours, so that if it is first on the list — the owner
                # every node now defers to — it holds the record and drives it (re-confirming
                # with the others first) instead of leaving it stranded. Finished records too:
                # handed back to nobody, a finished record was gone once each of its replicas
                # had restarted in turn (the soak lost 421 of 1,523 that way). Handed back
                # paced and until confirmed (`Replication.hand_back`): sent once, all in one
                # burst, most were dropped by the transport's bounded queue and the soak still
                # lost 238.
                for n in returned:
                    self.replication.hand_back_later(now, n, tid)
            if owner == me:
                self._adopt(now, tid)
                d = self.drives[tid]
                for n in returned:  # the owner pushes until it confirms (see `_drive`)
                    d.sync.acked.pop(n, None)
            elif tid in self.drives:
                d = self.drives.pop(tid)
                self.negotiator.release(d.neg)
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
                    d.sync.forget()
        return not minority and now >= self._settled_at()

    def _settled_at(self) -> float:
        """When this node may decide again: `partition_grace` after it last saw a majority
        again, and after it last saw a member declared failed. A partition shows on each side
        as failures declared one by one over a detection period: until the side that turns out
        to be the smaller one has seen enough of them, it still sees a majority. Deciding in
        that window, an owner there replaced its replicas from the other side with nodes of its
        own side and recorded a result, while the other side's owner took the record over and
        recorded one too (3 seeds in 40 of the unequal-split test)."""
        grace = self.ctx.config.partition_grace
        return max(self._majority_since, self._failure_seen) + grace

    # ------------------------------------------------------------------ driving one record

    def tick(self, now: float) -> None:
        self.check_membership(now)
        self.store.collect(now, self.drives)
        self.replication.hand_back(now)
        self.replication.send_held_acks(now)
        while self._timers and self._timers[0][0] <= now:
            t, _, tid = heapq.heappop(self._timers)
            d = self.drives.get(tid)
            if d is None or d.due != t:
                continue
            d.due = INF
            if now - t > self.ctx.config.put_timeout:
                # Woken far later than asked: this node was stopped (or starved) meanwhile, and
                # others may have taken the record over. Re-confirm our copy before acting on
                # it (the confirmations we hold are from before the stop): a resumed owner used
                # to award from its stale round, running the task again, before it learnt that
                # it had been replaced.
                d.sync.forget()
                self.ctx.stats["late_wakeups"] += 1
            self._drive(now, tid, d)

    def _drive(self, now: float, tid: str, d: _Drive) -> None:
        c = self.ctx
        rep = self.replication
        rec = self.store.records[tid]
        if c.owner_of(rec) != c.node_id:
            self.drives.pop(tid, None)
            self.negotiator.release(d.neg)
            return
        if not self.deciding(now):
            # look again later: suspicions that clear do not change the live set
            self._wake(tid, max(now + c.config.put_timeout, self._settled_at()))
            return
        if not d.sync.synced:
            unplaced = rec.state == TaskState.PENDING and d.neg.round is None
            pick = self.negotiator.direct_pick(now, rec, d.neg) if unplaced else None
            if pick is not None and self._new_submission(rec, d):
                # A new task that gossip shows ample room for: place it now, so that the
                # replicas' first copy is the placed one (one push and its acks instead of
                # two), and award it once they hold it (below).
                rec = self._place(now, rec, d, rec.attempt + 1, DIRECT, pick, award=False)
                self.negotiator.awarded_directly(now, pick.node, rec.spec.cpus)
                d.award_held = rec.attempt
            # We just took the record over (or learnt that another owner moved it on): decide
            # nothing until every live replica has confirmed our copy. A replica holding one
            # that outranks ours answers with it instead (`on_put_ack` fetches it), so a new
            # owner does not negotiate, re-place or record a result from a stale copy (one
            # that missed its predecessor's last writes, or a copy left from before a pause or
            # a partition): it used to act at once, placing the task a second time.
            # The preferred nodes are asked too: a copy whose listed replicas have all failed
            # since it was written (a replica dropped while it was paused, that later finds
            # itself first) learns there that the record lives on elsewhere. Bids are asked
            # for meanwhile, which saves a round trip before the award: a round only reserves,
            # a copy found stale abandons it (`hold`), and the award waits for the confirmations.
            rep.push(now, rec, d.sync)
            # (a task to be awarded directly needs no round: it waits for the confirmations)
            bids = unplaced and pick is None
            if bids and now >= d.neg.next_try:
                self.negotiator.start_round(now, rec, d.neg)
            if not rep.replicated(rec, d.sync, hints=True):
                t = d.sync.next_push  # or the confirmations: a round is decided after them
                if bids and d.neg.round is None:
                    t = min(t, d.neg.next_try)
                self._wake(tid, max(t, now))
                return
            d.sync.synced = True
        for addr in sorted(d.entries):  # sorted: a set's order varies between processes
            c.send(addr, TaskPutAck(tid, rec.version, rec.state, all_replicas=True,
                                    submitted=rec.submitted))  # fmt: skip
        d.entries.clear()
        if d.award_held:
            if rec.state == TaskState.PLACED and rec.attempt == d.award_held:
                self.watcher.award(now, rec, DIRECT, d.watch)
            d.award_held = 0
        replicas = rep.repaired(rec)
        if replicas is not None:
            rec = self.write(now, rec, replicas=replicas)
        st = rec.state
        if st == TaskState.RUNNING and rec.node_addr:
            self.watcher.refresh(rec, d.watch)
        if st == TaskState.PENDING:
            if d.neg.round is not None:
                if now >= d.neg.round.deadline or d.neg.round.answered:
                    self._decide(now, tid, d)
            elif now >= d.neg.next_try:
                cand = self.negotiator.direct_pick(now, rec, d.neg)
                if cand is not None:
                    self._place(now, rec, d, rec.attempt + 1, DIRECT, cand)
                    self.negotiator.awarded_directly(now, cand.node, rec.spec.cpus)
                else:
                    self.negotiator.start_round(now, rec, d.neg)
        elif st in (TaskState.PLACED, TaskState.RUNNING):
            why = self.watcher.check(now, rec, d.watch)
            if why:
                self._replace(now, rec, d, why)
        rec = self.store.records[tid]
        pushed = rep.push(now, rec, d.sync)
        if rec.state.terminal and rep.replicated(rec, d.sync):
            # Only now is the result recorded: every live replica holds it. Runners and
            # cancelling clients are answered only from here, so an owner that dies (or turns
            # out to be stale) before replicating cannot have promised a result that is lost.
            if self.store.mark_recorded(tid):
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
        if rec.state.terminal and rep.replicated(rec, d.sync) and not d.waiting:
            self.drives.pop(tid, None)  # done: nothing left to do for it
            return
        # when to look again
        t = d.sync.next_push if pushed else INF
        if rec.state == TaskState.PENDING:
            t = min(t, d.neg.round.deadline if d.neg.round else d.neg.next_try)
        else:
            t = min(t, self.watcher.next_look(rec, d.watch))
        self._wake(tid, max(t, now))

    # ------------------------------------------------------------------ placing and re-placing

    def on_bid(self, now: float, sender: str, sender_addr: str, b: Bid) -> None:
        d = self.drives.get(b.task_id)
        if self.negotiator.take_bid(now, sender, sender_addr, b, d.neg if d else None):
            self._decide(now, b.task_id, d)

    def _decide(self, now: float, tid: str, d: _Drive) -> None:
        rec = self.store.records[tid]
        if rec.state != TaskState.PENDING:
            d.neg.round = None  # moved on meanwhile (a cancel, a report): nothing to award
            return
        if not d.sync.synced:
            return  # decided once the replicas confirmed our copy (`_drive`)
        won = self.negotiator.decide(now, rec, d.neg)
        if won is None:
            self._wake(tid, d.neg.next_try)
            return
        rnd, cand = won
        self._place(now, rec, d, rnd.attempt, rnd.no, cand)

    def _place(self, now: float, rec: TaskRecord, d: _Drive, attempt: int, round_no: int,
               cand: Candidate, award: bool = True) -> TaskRecord:  # fmt: skip
        """Write `placed` for a new attempt on `cand` and (unless told not to yet) send it the
        award."""
        rec = self.write(now, rec, state=TaskState.PLACED, attempt=attempt, node=cand.node,
                         node_addr=cand.addr, placed=now,
                         node_generation=self.ctx.view.generation_of_member(cand.node) or 0)
        if award:
            self.watcher.award(now, rec, round_no, d.watch)
        self._wake(rec.id, now)
        return rec

    def _new_submission(self, rec: TaskRecord, d: _Drive) -> bool:
        """Whether `rec` is a submission's first version, which nobody has moved on: no other
        node can have placed it, so it may be placed before the replicas confirm it (a copy
        that outranks ours still wins: the award waits for their confirmations)."""
        return (rec.version == 1 and rec.state == TaskState.PENDING and rec.attempt == 0
                and d.award_held == 0 and d.neg.round is None and bool(d.entries))  # fmt: skip

    def _replace(self, now: float, rec: TaskRecord, d: _Drive, why: str) -> None:
        """Back to negotiation; the next placement is a new attempt (the old one is fenced)."""
        if rec.node_addr:
            self.ctx.send(rec.node_addr, ReportAck(rec.id, rec.attempt, keep=False))
        self.write(now, rec, state=TaskState.PENDING, node="", node_addr="", node_generation=0,
                   reason=why)
        d.neg.next_try = now
        d.neg.backoff = 0.0
        self.ctx.stats["replacements"] += 1

    # ------------------------------------------------------------------ what runners say

    def on_award_ack(self, now: float, sender: str, a: AwardAck) -> None:
        c = self.ctx
        rec = self.store.records.get(a.task_id)
        d = self.drives.get(a.task_id)
        if rec is None or d is None or rec.attempt != a.attempt or rec.node != sender:
            c.stats["stale_award_acks"] += 1
            return
        if rec.state != TaskState.PLACED:
            return  # a duplicate
        if a.ok:
            d.watch.runner_heard = now
            self.write(now, rec, state=TaskState.RUNNING, started=a.started, reason="")
        else:
            c.stats["awards_refused"] += 1
            if d.watch.award_round == DIRECT:
                d.neg.direct_refused = True  # its gossip was stale: ask for bids next
                c.stats["direct_awards_refused"] += 1
            self.write(now, rec, state=TaskState.PENDING, node="", node_addr="",
                       node_generation=0, reason=f"award refused: {a.reason}")  # fmt: skip
            d.neg.next_try = now
        self._wake(a.task_id, now)

    def on_report(self, now: float, sender: str, sender_addr: str, r: TaskReport) -> None:
        c = self.ctx
        rec = self.store.records.get(r.task_id)
        d = self.drives.get(r.task_id)
        done = rec is not None and d is None and rec.state.terminal and (
            c.owner_of(rec) == c.node_id
        )  # fmt: skip
        if rec is None and r.task_id in self.store.tombstones:
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
        d.watch.runner_heard = now
        if r.state == TaskState.RUNNING:
            if rec.state == TaskState.PLACED:
                self.write(now, rec, state=TaskState.RUNNING, started=r.started)
            c.send(sender_addr, ReportAck(r.task_id, r.attempt, keep=True))
            return
        if not rec.state.terminal and not (self.deciding(now) and d.sync.synced):
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

    # ------------------------------------------------------------------ what clients ask

    def on_cancel(self, now: float, sender_addr: str, q: TaskCancel) -> None:
        c = self.ctx
        rec = self.store.records.get(q.task_id)
        tomb = self.store.tombstones.get(q.task_id)
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
        if not (self.deciding(now) and d.sync.synced):
            c.send(sender_addr, TaskCancelReply(q.task_id, q.req, False, rec.state, error=(
                "its owner sees no majority of the cluster (a partition?): try again later"
                if self.in_minority else "its owner is confirming the record: try again")))
            return
        self.negotiator.release(d.neg)
        self.write(now, rec, state=TaskState.CANCELLED, reason="cancelled on request",
                   finished=now)  # fmt: skip
        c.stats["cancelled"] += 1
        # The client is answered, and the runner told to stop, once every live replica holds
        # the cancellation (`_drive`). Doing both at once told the client "cancelled" even when
        # this owner died before pushing it (the next owner then ran the task to completion),
        # and killed a run that the next owner still waited on until `runner_silence`.
        d.cancels.append((sender_addr, q.req))

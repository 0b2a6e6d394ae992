"""The node as a worker: it bids for tasks, reserves under leases, runs what it is awarded and
reports how each run ended to the task's owner until the owner confirms.

Every reservation goes through the `Ledger`, so concurrent negotiations can never over-commit
this node. Messages that match nothing (bids never asked for, awards for leases that expired,
releases of unknown leases, duplicate awards) are answered harmlessly and counted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.context import Context
from agent.execution import StartTask, StopTask, TaskExit
from agent.ledger import Demand, Ledger
from agent.messages import Award, AwardAck, Bid, BidRequest, Release, ReportAck, TaskReport
from agent.negotiation import DIRECT
from agent.policies.base import peak, usable_forecast
from agent.records import demand_of, labels_match
from agent.tasks import TaskRecord, TaskState

INF = math.inf
# A run's start is confirmed to its owner this long after the award (at most a third of
# `award_timeout`, after which the owner re-sends it), unless the run has ended by then: its
# result then says both (a record may go from placed to its result), one message instead of two.
AWARD_ACK_DELAY = 0.1  # seconds


@dataclass(slots=True)
class _Run:
    record: TaskRecord  # as awarded: the spec, the attempt and who to report to
    started: float
    next_report: float
    ended: TaskExit | None = None
    finished: float = 0.0
    abandoned: bool = False  # the owner does not want it any more: stopped, nothing to report
    result_sends: int = 0  # how often the final report went out
    result_owner: str = ""  # who it went to the first time (alone)
    ack_to: str = ""  # the owner's address while the award's confirmation waits (`tick`)
    ack_at: float = INF  # when it is due


class Worker:
    def __init__(self, ctx: Context, ledger: Ledger) -> None:
        self.ctx = ctx
        self.ledger = ledger
        self.runs: dict[tuple[str, int], _Run] = {}
        self.load = 0.0  # latest observed load, 0..1
        # the forecast peak background (fraction of this node) over each of the configured
        # horizons, at the configured quantile; () = no forecaster
        self.forecast: tuple[float, ...] = ()
        self.accepting = True  # False once leaving

    # ------------------------------------------------------------------ bidding

    def on_bid_request(self, now: float, sender_addr: str, q: BidRequest) -> None:
        c = self.ctx
        key = ("lease", q.task_id, q.attempt, q.round, sender_addr)
        d = demand_of_request(q)
        reason = ""
        if not self.accepting:
            reason = "leaving"
        elif (q.task_id, q.attempt) in self.runs:
            reason = "already running this attempt"
        elif not labels_match(q.labels, c.view.resources.labels):  # as gossiped, also after
            # `agora label` (a copy taken at start never saw labels set later)
            reason = "labels do not match"
        elif not self.ledger.could_ever_fit(d):
            reason = "larger than this node"
        elif not self.ledger.holds(key) and self.ledger.lease_count >= c.config.max_leases:
            # tiny requests fit many times over: the number of negotiations a peer can open
            # here is bounded by count, not only by capacity
            reason = "too many negotiations"
            c.stats["bids_refused_max_leases"] += 1
        elif not self.ledger.lease(key, d, now + c.config.lease):
            reason = "no room now"
        if reason:
            c.stats["bids_refused"] += 1
            c.send(sender_addr, Bid(q.task_id, q.attempt, q.round, False, reason=reason,
                                    load=self.load, queued=self.ledger.queued))  # fmt: skip
            return
        c.stats["bids_made"] += 1
        c.send(sender_addr, Bid(q.task_id, q.attempt, q.round, True,
                                headroom=self.headroom(q.expected), load=self.load,
                                queued=self.ledger.queued))  # fmt: skip

    def headroom(self, seconds: float) -> float:
        """CPUs expected free over the next `seconds` with everything held here (leases too):
        the forecast peak background over the horizon covering them, else the current load."""
        cap = self.ledger.capacity.cpus
        cfg = self.ctx.config
        hs = cfg.forecast_horizons
        background = peak(self.forecast, seconds, cfg.forecast_step, hs) \
            if usable_forecast(self.forecast, hs) else self.load  # fmt: skip
        return cap * (1.0 - background) - self.ledger.used().cpus

    def on_release(self, sender_addr: str, r: Release) -> None:
        if not self.ledger.release(("lease", r.task_id, r.attempt, r.round, sender_addr)):
            self.ctx.stats["stale_releases"] += 1

    def on_award(self, now: float, sender: str, sender_addr: str, a: Award) -> None:
        c = self.ctx
        rec = a.record
        if sender not in rec.replicas or not c.is_live(sender) or (
            sender != c.node_id and c.view.addr_of(sender) != sender_addr
        ):
            # only a live member holding the record may award it (and answers go to where
            # that member lives): a forged award from anyone else used to run its command
            c.stats["refused_awards"] += 1
            return
        run_key = (rec.id, rec.attempt)
        if run_key in self.runs:
            run = self.runs[run_key]
            if rec.version > run.record.version and rec.state == TaskState.RUNNING:
                # the owner of our run tells us where its record lives now (takeover, repair):
                # report there from now on
                run.record = rec
                c.stats["award_refreshes"] += 1
            else:
                c.stats["duplicate_awards"] += 1
            run.ack_to, run.ack_at = "", INF  # answered here
            ok = not run.abandoned
            c.send(sender_addr, AwardAck(rec.id, rec.attempt, ok, run.started,
                                         "" if ok else "stopped"))  # fmt: skip
            return
        if rec.state == TaskState.RUNNING:
            # the owner's refresh of a run (see `Owner._drive`) that we no longer have (it was
            # stopped, or it ended and its result is recorded): never start the attempt again
            c.stats["stale_awards"] += 1
            c.send(sender_addr, AwardAck(rec.id, rec.attempt, False, reason="not running here"))
            return
        lease_key = ("lease", rec.id, rec.attempt, a.round, sender_addr)
        if not self.ledger.holds(lease_key):
            # a direct award (no round, `negotiation.DIRECT`), or a lease that expired or was
            # never given: take it only if it fits
            c.stats["direct_awards_taken" if a.round == DIRECT else "stale_awards"] += 1
            if any(tid == rec.id and not old.abandoned and old.ended is None
                   for (tid, _), old in self.runs.items()):  # fmt: skip
                # ...and never let it supersede a run of this task that we do have: a stale or
                # forged award (one we never bid for) used to stop the current attempt here,
                # which the owner then only noticed after `runner_silence`.
                c.send(sender_addr, AwardAck(rec.id, rec.attempt, False, reason="stale award"))
                return
        if not self.accepting or not self.ledger.commit(
            ("run", rec.id, rec.attempt), demand_of(rec.spec), lease_key
        ):
            c.send(sender_addr, AwardAck(rec.id, rec.attempt, False, reason="no room"))
            return
        for (tid, att), old in self.runs.items():  # an older attempt of the same task: superseded
            if tid == rec.id and not old.abandoned and old.ended is None:
                old.abandoned = True
                c.effects.append(StopTask(tid, att))
        due = now + min(AWARD_ACK_DELAY, c.config.award_timeout / 3)
        self.runs[run_key] = _Run(rec, now, now + c.config.heartbeat, ack_to=sender_addr,
                                  ack_at=due)  # fmt: skip
        c.effects.append(StartTask(rec.id, rec.attempt, rec.spec))
        c.stats["runs_started"] += 1

    # ------------------------------------------------------------------ running and reporting

    def on_task_exit(self, now: float, e: TaskExit) -> None:
        run = self.runs.get((e.task_id, e.attempt))
        if run is None or run.ended is not None:
            self.ctx.stats["unknown_exits"] += 1
            return
        self.ledger.uncommit(("run", e.task_id, e.attempt))
        if run.abandoned:
            del self.runs[(e.task_id, e.attempt)]
            return
        run.ended = e
        run.finished = now
        run.next_report = now
        self.ctx.stats["runs_ended"] += 1

    def on_report_ack(self, a: ReportAck) -> None:
        run = self.runs.get((a.task_id, a.attempt))
        if run is None:
            self.ctx.stats["stale_report_acks"] += 1
            return
        if run.ended is not None:
            del self.runs[(a.task_id, a.attempt)]  # the owner recorded the result
        elif not a.keep and not run.abandoned:
            run.abandoned = True  # cancelled, or superseded by a newer attempt elsewhere
            self.ctx.effects.append(StopTask(a.task_id, a.attempt))
            self.ctx.stats["runs_stopped"] += 1

    def tick(self, now: float) -> None:
        c = self.ctx
        if self.ledger.expire(now):
            c.stats["leases_expired"] += 1
        for (tid, att), run in self.runs.items():
            if run.ack_to and (run.ended is not None or run.abandoned):
                run.ack_to, run.ack_at = "", INF  # its result says it started; or unwanted
            elif run.ack_to and run.ack_at <= now:
                c.send(run.ack_to, AwardAck(tid, att, True, started=run.started))
                run.ack_to, run.ack_at = "", INF
            if run.abandoned or run.next_report > now:
                continue
            rec = run.record
            if run.ended is None:
                rep = TaskReport(tid, att, TaskState.RUNNING, started=run.started)
                c.send_to(c.owner_of(rec), rep)
                run.next_report = now + c.config.heartbeat
            else:
                e = run.ended
                rep = TaskReport(tid, att, e.state, e.exit_code, e.reason, run.started,
                                 run.finished, e.stdout, e.stderr)  # fmt: skip
                # To the owner alone, the first time and once more if it is still the owner:
                # the other replicas would only drop it (each copy carries the output tails),
                # and under a burst an owner is often just slower than `report_retry` to
                # replicate a result (when every re-send went to all replicas, the 2,000-task
                # burst cost 1.42 reports per task). Later re-sends go to every replica:
                # ownership may have moved without this node seeing it.
                owner = c.owner_of(rec)
                alone = owner in rec.replicas and (
                    run.result_sends == 0 or run.result_sends == 1 and owner == run.result_owner)
                if run.result_sends == 0:
                    run.result_owner = owner
                for n in [owner] if alone else c.report_targets(rec):
                    c.send_to(n, rep)
                run.result_sends += 1
                run.next_report = now + c.config.report_retry

    def next_wakeup(self) -> float:
        t = self.ledger.next_expiry()
        for run in self.runs.values():
            if not run.abandoned:
                t = min(t, run.next_report, run.ack_at)
        return t

    def running(self) -> list[tuple[str, int]]:
        return [k for k, r in self.runs.items() if r.ended is None and not r.abandoned]


def demand_of_request(q: BidRequest) -> Demand:
    return Demand(float(q.cpus), int(q.memory), int(q.gpus))

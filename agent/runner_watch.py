"""Watching the node a task was awarded to: the award is re-sent until confirmed, and a runner
that failed, left, restarted or went silent is given up on, so that the owner places the task
again as a new attempt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.context import Context
from agent.messages import Award
from agent.tasks import TaskRecord, TaskState
from gossip.messages import Status

INF = math.inf


@dataclass(slots=True)
class RunnerWatch:
    """The owner's view of the runner of one placed or running record."""

    award_sent: float = 0.0
    award_tries: int = 0
    award_round: int = 0  # the negotiation round whose winner the award went to
    runner_knows: tuple[str, ...] = ()  # the replica list the runner was last sent
    runner_heard: float = 0.0
    runner_lost: float = INF  # when this owner first saw the runner failed (or left)


class RunnerWatcher:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def award(self, now: float, rec: TaskRecord, round_no: int, w: RunnerWatch) -> None:
        """Send the placed record to its winner and start waiting for the confirmation."""
        w.award_tries = 1
        w.award_sent = now
        w.runner_heard = now
        w.runner_lost = INF
        self.ctx.send(rec.node_addr, Award(rec, round_no))
        self.ctx.stats["awards"] += 1
        w.award_round = round_no
        w.runner_knows = rec.replicas

    def refresh(self, rec: TaskRecord, w: RunnerWatch) -> None:
        """Tell a running task's runner the current replica list, if it changed."""
        if rec.replicas != w.runner_knows:
            # The runner sends its heartbeats to the first live replica of the record it was
            # awarded. After a takeover or a repair that may no longer be us (or anyone who
            # owns the record): without this the owner heard nothing and re-placed a healthy
            # run after `runner_silence`. A repeated award tells it the current record.
            self.ctx.send(rec.node_addr, Award(rec, w.award_round))
            w.runner_knows = rec.replicas

    def check(self, now: float, rec: TaskRecord, w: RunnerWatch) -> str:
        """Why the run is to be given up on ("" if it is not); re-sends an unconfirmed award."""
        c = self.ctx
        st = c.view.status_of(rec.node) if rec.node != c.node_id else Status.ALIVE
        # The runner restarted since the award (a run ends with its process). Seen only in the
        # generation when the new life was up before anyone watched, as after a takeover (the
        # new owner confirms the record with the replicas first): watching the status alone,
        # it saw a live runner and re-placed only after `runner_silence`.
        restarted = (c.view.generation_of_member(rec.node) or 0) > rec.node_generation
        if restarted or st in (Status.DEAD, Status.LEFT, None):
            if w.runner_lost == INF:
                w.runner_lost = now
            if now < w.runner_lost + c.config.partition_grace:
                return ""  # looked at again then (`next_look`); a majority lost meanwhile stops us
            c.stats["runner_lost"] += 1
            how = "restarted" if restarted else "left" if st == Status.LEFT else "failed"
            return f"node {rec.node} {how}"
        w.runner_lost = INF
        if rec.state == TaskState.PLACED and now >= w.award_sent + c.config.award_timeout:
            if w.award_tries >= c.config.award_retries:
                c.stats["awards_unconfirmed"] += 1
                return "award never confirmed"
            w.award_tries += 1
            w.award_sent = now
            # name the round the winner's lease is under (round 0 made every re-sent award look
            # lease-less: counted stale, and refused when the node was full with that lease)
            c.send(rec.node_addr, Award(rec, w.award_round))
            return ""
        if rec.state == TaskState.RUNNING and now >= w.runner_heard + c.config.runner_silence:
            c.stats["runner_silent"] += 1
            return f"node {rec.node} stopped reporting"
        return ""

    def next_look(self, rec: TaskRecord, w: RunnerWatch) -> float:
        """When `check` may find something new (never, unless the record is placed or
        running: `check` is not called then, so a runner lost before its result came in
        stayed lost, and an owner waiting for a replica to confirm that result woke at once,
        again and again, once the grace had passed: a busy loop at one instant)."""
        cfg = self.ctx.config
        if rec.state not in (TaskState.PLACED, TaskState.RUNNING):
            return INF
        if w.runner_lost < INF:  # placed or running on a node that failed
            return w.runner_lost + cfg.partition_grace
        if rec.state == TaskState.PLACED:
            return w.award_sent + cfg.award_timeout
        if rec.state == TaskState.RUNNING:
            return w.runner_heard + cfg.runner_silence
        return INF

"""The task records this node holds, and for how long.

A finished record is kept `retention` after it ended here, then only a tombstone that refuses
its return for `tombstone_retention`. Unfinished records are counted, in all and per submitter,
so that no agent (and no one client) is made to hold more than its share.
"""

from __future__ import annotations

import collections
import math
from collections import OrderedDict
from collections.abc import Container
from dataclasses import dataclass

from agent.context import Context
from agent.tasks import TaskRecord, TaskState

FULL = "holds too many unfinished tasks"


@dataclass(frozen=True, slots=True)
class Tombstone:
    """What is left of a collected record: enough to refuse to bring it back."""

    state: TaskState
    version: int
    until: float  # forgotten then


class TaskStore:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.records: dict[str, TaskRecord] = {}
        self.tombstones: OrderedDict[str, Tombstone] = OrderedDict()
        # when each terminal record was first held terminal here (oldest first), the records
        # not yet terminal, and which held records had their result recorded (`mark_recorded`)
        self._ended: OrderedDict[str, float] = OrderedDict()
        self._active: dict[str, str] = {}  # unfinished record ids -> their submitter
        self._active_by: collections.Counter[str] = collections.Counter()  # submitter -> count
        self._recorded: set[str] = set()

    def put(self, now: float, rec: TaskRecord) -> None:
        self.records[rec.id] = rec
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

    def refusal(self, rec: TaskRecord) -> str:
        """Why a record new here is not taken ("" if it is): too many unfinished ones held."""
        if rec.state.terminal:
            return ""
        if len(self._active) >= self.ctx.config.max_active_records:
            self.ctx.stats["records_refused"] += 1
            return f"this agent {FULL} (max_active_records)"
        who = rec.spec.submitter
        if who and self._active_by[who] >= self.ctx.config.max_tasks_per_client:
            # one client must not fill an agent's share of the cluster by itself
            self.ctx.stats["records_refused_per_client"] += 1
            return (f"client {who!r} already has {self._active_by[who]} unfinished tasks held by "
                    f"this agent (max_tasks_per_client)")
        return ""

    def mark_recorded(self, tid: str) -> bool:
        """Note that the record's result is recorded; True the first time."""
        if tid in self._recorded:
            return False
        self._recorded.add(tid)
        return True

    def next_collection(self) -> float:
        cfg = self.ctx.config
        t = math.inf
        if self._ended:
            t = next(iter(self._ended.values())) + cfg.retention
        if self.tombstones:
            t = min(t, next(iter(self.tombstones.values())).until)
        return t

    def collect(self, now: float, driven: Container[str]) -> None:
        """Free finished records `retention` after they ended here, keeping a tombstone that
        refuses their return (a stale copy pushed again, a late report) for
        `tombstone_retention`. A record still `driven` (a replica has not confirmed the result
        yet) waits another `retention`."""
        cfg = self.ctx.config
        due = []
        for tid, t in self._ended.items():
            if t + cfg.retention > now:
                break
            due.append(tid)
        for tid in due:
            del self._ended[tid]
            if tid in driven:
                self._ended[tid] = now
                continue
            rec = self.records[tid]
            self.bury(now, tid, rec.state, rec.version)
        while self.tombstones and next(iter(self.tombstones.values())).until <= now:
            self.tombstones.popitem(last=False)

    def bury(self, now: float, tid: str, state: TaskState, version: int) -> None:
        """Drop the record, leaving a tombstone with this outcome."""
        del self.records[tid]
        self._recorded.discard(tid)
        self._deactivate(tid)
        self._ended.pop(tid, None)
        self.tombstones[tid] = Tombstone(state, version, now + self.ctx.config.tombstone_retention)
        self.ctx.stats["records_collected"] += 1
        while len(self.tombstones) > self.ctx.config.max_tombstones:
            self.tombstones.popitem(last=False)
            self.ctx.stats["tombstones_dropped"] += 1

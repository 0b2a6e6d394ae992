"""Client requests any agent accepts (submit, status, list, cancel), answered once the cluster
has answered: these are the operations that need other nodes before they can reply.

`submit` writes version 1 of the record for its replica set (consistent hashing over the live
members) and replies only when all of them hold it, so an id printed to the user survives the
failure of fewer than r of those nodes. It sends the record to the owner alone, which pushes
it to the other replicas as it starts driving it and answers for all of them once they hold
it (`Owner.on_put`); if the owner answers only for itself, or not within `put_timeout`, the
entry sends it to every replica and waits for each. Lookups ask the nodes most likely to hold
the record first and widen to everyone if none has it. A list asks every live node for the
records it owns as summaries (`summary`), bounded in number and in bytes so that every reply
and the client's answer fit in one message; what is left out is counted, never hidden. Each
answer is a `Reply` effect (request number, ok, data, error), which the shell sends.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import msgpack

from agent.context import Context
from agent.effects import Reply
from agent.messages import (
    MAX_LIST_RECORDS,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskPut,
    TaskPutAck,
)
from agent.owner import NOT_OWNER, Owner
from agent.records import newer, spec_problem, unplaceable_reason
from agent.tasks import TaskRecord, TaskSpec, TaskState, record_size
from gossip.wire import MAX_MESSAGE_BYTES

LIST_BYTES = MAX_MESSAGE_BYTES - 64 * 1024  # records in a list reply, rows in an answer
SUMMARY_CHARS = 200  # of a listed task's command and reason; `status` shows them whole


def task_row(r: TaskRecord) -> dict[str, Any]:
    """A record as a plain dict for clients (msgpack- and JSON-friendly)."""
    s = r.spec
    return {
        "id": r.id, "state": r.state.label, "attempt": r.attempt, "node": r.node,
        "node_addr": r.node_addr, "exit_code": r.exit_code if r.state.terminal else None,
        "reason": r.reason, "submitted": r.submitted, "placed": r.placed or None,
        "started": r.started or None, "finished": r.finished or None,
        "replicas": list(r.replicas), "version": r.version,
        "argv": list(s.argv), "cpus": s.cpus, "memory": s.memory, "gpus": s.gpus,
        "labels": dict(s.labels), "deadline": s.deadline or None, "timeout": s.timeout or None,
        "expected": s.expected, "stdout": r.stdout, "stderr": r.stderr,
        "submitter": s.submitter,
    }  # fmt: skip


def _shorten(text: str) -> str:
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS] + "..."


def _shorten_argv(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command's first SUMMARY_CHARS characters; a cut argument ends with "..."."""
    out: list[str] = []
    left = SUMMARY_CHARS
    for a in argv:
        if len(a) > left:
            out.append(a[:left] + "...")
            break
        out.append(a)
        left -= len(a)
    return tuple(out)


def summary(r: TaskRecord) -> TaskRecord:
    """A record as a list carries it: no environment, directory or output, the start of the
    command and reason. A whole record may be as large as a message; `status` fetches one."""
    spec = dataclasses.replace(r.spec, argv=_shorten_argv(r.spec.argv), env={}, cwd="")
    return dataclasses.replace(r, spec=spec, reason=_shorten(r.reason), stdout="", stderr="")


def _newest_first(records: Any) -> list[TaskRecord]:
    return sorted(records, key=lambda r: (r.submitted, r.id), reverse=True)


@dataclass(slots=True)
class _Pending:
    kind: str  # submit | get | list | cancel
    task_id: str
    deadline: float
    waiting: set[str] = field(default_factory=set)  # nodes yet to answer
    found: TaskRecord | None = None
    records: dict[str, TaskRecord] = field(default_factory=dict)
    widened: bool = False
    state: int = -1
    record: TaskRecord | None = None  # submit: what was written
    next_resend: float = 0.0
    existing: bool = False
    via_owner: bool = False  # submit: sent to the owner alone, whose ack may speak for all
    asked_again: bool = False  # submit: the owner was sent it a second time (`_resend`)
    by: str | None = None  # cancel: only a task this client submitted (None: any task)
    limit: int = MAX_LIST_RECORDS  # list: rows in the answer at most
    omitted: int = 0  # list: matching records left out so far
    why: str = ""  # cancel: why the owner could not do it, if it said


class Requests:
    def __init__(self, ctx: Context, owner: Owner) -> None:
        self.ctx = ctx
        self.owner = owner
        self.pending: dict[int, _Pending] = {}
        self._req = 0

    def _new(self, client_req: int, p: _Pending) -> None:
        self.pending[client_req] = p

    def _reply(self, req: int, ok: bool, data: Any = None, error: str = "") -> None:
        self.pending.pop(req, None)
        self.ctx.effects.append(Reply(req, ok, data, error))

    # ------------------------------------------------------------------ submit

    def submit(self, now: float, req: int, task_id: str, spec: TaskSpec) -> None:
        c = self.ctx
        problem = spec_problem(spec)
        if problem:
            self._reply(req, False, error=problem)
            return
        nodes = [r for n in [c.node_id, *c.view.live_nodes()]
                 if (r := c.view.record_of(n)) is not None]
        why = unplaceable_reason(spec, nodes)
        if why:
            c.stats["rejected_unplaceable"] += 1
            self._reply(req, False, error=why)
            return
        held = self.owner.store.records.get(task_id)
        if held is not None and held.spec != spec:
            self._reply(req, False, error=f"task id {task_id!r} is taken by a different task")
            return
        replicas = tuple(c.ring().preference(task_id, c.config.replicas))
        rec = held or TaskRecord(task_id, spec, TaskState.PENDING, 1, c.node_id, replicas,
                                 submitted=now)  # fmt: skip
        owner = c.owner_of(rec)
        p = _Pending("submit", task_id, now + c.config.submit_timeout, {owner}, record=rec,
                     existing=held is not None, via_owner=True)  # fmt: skip
        self._new(req, p)
        if c.send_to(owner, TaskPut(rec, submission=True)):
            p.next_resend = now + c.config.put_timeout
        else:
            self._ask_every_replica(now, p)

    def _ask_every_replica(self, now: float, p: _Pending, answered: str = "") -> None:
        """The owner did not answer for the others (it `answered` for itself, or not in time):
        send the record to each replica that has not said it holds it, and wait for each."""
        if p.via_owner:
            p.via_owner = False
            p.waiting = set(p.record.replicas) - {answered}
        self._send_puts(now, p)

    def _resend(self, now: float, p: _Pending) -> None:
        """Unanswered in `put_timeout`: ask the owner once more if it is still the owner (under
        a burst an owner is often just slow: asking every replica then cost six messages more,
        three puts and their acks), else, or when that too goes unanswered, every replica."""
        c = self.ctx
        owner = next(iter(p.waiting), None) if p.via_owner else None
        if owner is not None and not p.asked_again and c.owner_of(p.record) == owner:
            p.asked_again = True
            if c.send_to(owner, TaskPut(p.record, submission=True)):
                p.next_resend = now + c.config.put_timeout
                return
        self._ask_every_replica(now, p)

    def _send_puts(self, now: float, p: _Pending) -> None:
        c = self.ctx
        for n in sorted(p.waiting):
            if not c.send_to(n, TaskPut(p.record)):
                p.waiting.discard(n)  # no longer known at all
        p.next_resend = now + c.config.put_timeout

    def on_put_ack(self, now: float, sender: str, a: TaskPutAck) -> None:
        for req, p in list(self.pending.items()):
            if p.kind != "submit" or p.task_id != a.task_id or sender not in p.waiting:
                continue
            if not a.ok:
                self._reply(req, False, error=f"task id {a.task_id!r}: {a.error}")
                continue
            p.waiting.discard(sender)
            if a.submitted != p.record.submitted:
                p.existing = True  # not the task this entry wrote: one submitted before
            if p.via_owner and not a.all_replicas:
                self._ask_every_replica(now, p, answered=sender)
            if not p.waiting:
                state = a.state.label if p.existing else TaskState.PENDING.label
                self._reply(req, True, {"id": p.task_id, "state": state,
                                        "existing": p.existing,
                                        "replicas": list(p.record.replicas)})  # fmt: skip

    # ------------------------------------------------------------------ lookups

    def get(
        self, now: float, req: int, task_id: str, kind: str = "get", by: str | None = None,
    ) -> None:  # fmt: skip
        c = self.ctx
        p = _Pending(kind, task_id, now + c.config.request_timeout, by=by)
        mine = self.owner.store.records.get(task_id)
        if mine is not None and task_id in self.owner.drives or (
            mine is not None and mine.state.terminal and c.owner_of(mine) == c.node_id
        ):
            p.found = mine  # we own it: our copy is the latest
            self._new(req, p)
            self._found(now, req, p)
            return
        p.found = mine
        ask = set(c.ring().preference(task_id, c.config.replicas + 2))
        if mine is not None:
            ask.update(mine.replicas)
        ask.discard(c.node_id)
        ask = {n for n in ask if c.is_live(n)}
        self._new(req, p)
        self._ask(now, req, p, ask)

    def _ask(self, now: float, req: int, p: _Pending, nodes: set[str]) -> None:
        c = self.ctx
        p.waiting = set()
        # in a fixed order: iterating the set followed string hashing (PYTHONHASHSEED), so a
        # simulated run with a given seed was not reproduced from one process to the next
        for n in sorted(nodes):
            if c.send_to(n, TaskGet(p.task_id, req)):
                p.waiting.add(n)
        p.deadline = now + c.config.request_timeout
        if not p.waiting:
            self._lookup_done(now, req, p)

    def on_get_reply(self, now: float, sender: str, r: TaskGetReply) -> None:
        if r.req == 0:  # an owner's fetch of a newer copy
            if r.record is not None and r.record.id == r.task_id:
                self.owner.hold(now, r.record)
            return
        p = self.pending.get(r.req)
        if p is None or p.task_id != r.task_id or sender not in p.waiting:
            self.ctx.stats["stale_replies"] += 1
            return
        p.waiting.discard(sender)
        if r.record is not None and r.record.id == r.task_id and newer(r.record, p.found):
            p.found = r.record
        if not p.waiting:
            self._lookup_done(now, r.req, p)

    def _lookup_done(self, now: float, req: int, p: _Pending) -> None:
        c = self.ctx
        if p.found is None and not p.widened:
            p.widened = True  # not where hashing says: ask everyone else
            asked_all = set(c.view.live_nodes())
            self._ask(now, req, p, asked_all)
            return
        if p.found is None:
            gone = self.owner.store.tombstones.get(p.task_id)
            if gone is not None:
                error = (f"task {p.task_id} {gone.state.label}; its record was collected "
                         f"(records are kept {c.config.retention:g} s after they end)")
            else:
                error = (f"unknown task id {p.task_id!r} (a finished task is forgotten "
                         f"{c.config.retention:g} s after it ends)")
            self._reply(req, False, error=error)
            return
        self._found(now, req, p)

    def _found(self, now: float, req: int, p: _Pending) -> None:
        rec = p.found
        assert rec is not None
        if p.kind == "get":
            self._reply(req, True, task_row(rec))
            return
        # cancel: ask every replica; the owner answers ok
        if p.by is not None and rec.spec.submitter != p.by:
            self._reply(req, False, error=f"task {rec.id} was not submitted by {p.by!r}")
            return
        if rec.state.terminal:
            self._reply(req, False, error=f"task {rec.id} already {rec.state.label}")
            return
        c = self.ctx
        p.kind = "cancel"
        p.waiting = set()
        for n in rec.replicas:
            if c.is_live(n) and c.send_to(n, TaskCancel(rec.id, req)):
                p.waiting.add(n)
        p.deadline = now + c.config.request_timeout
        if not p.waiting:
            self._reply(req, False, error=f"no live replica of task {rec.id} answered")

    def cancel(self, now: float, req: int, task_id: str, by: str | None = None) -> None:
        """Cancel a task; `by` (a client name) may cancel only its own tasks (None: anyone)."""
        self.get(now, req, task_id, kind="cancel_lookup", by=by)

    def on_cancel_reply(self, now: float, sender: str, r: TaskCancelReply) -> None:
        p = self.pending.get(r.req)
        if p is None or p.kind != "cancel" or sender not in p.waiting:
            self.ctx.stats["stale_replies"] += 1
            return
        p.waiting.discard(sender)
        if r.error and r.error != NOT_OWNER:
            p.why = r.error
        if r.ok:
            self._reply(r.req, True, {"id": r.task_id, "state": r.state.label})
        elif r.error.startswith("already"):
            self._reply(r.req, False, error=f"task {r.task_id} {r.error}")
        elif not p.waiting:
            self._cancel_failed(r.req, p)

    def _cancel_failed(self, req: int, p: _Pending) -> None:
        """No owner cancelled it: say why if the owner said (no majority, taking it over)."""
        self._reply(req, False, error=f"task {p.task_id} not cancelled: {p.why}" if p.why
                    else f"no owner of task {p.task_id} answered; try again")

    # ------------------------------------------------------------------ listing

    def list(self, now: float, req: int, state: int = -1,
             limit: int = MAX_LIST_RECORDS) -> None:  # fmt: skip
        """The newest `limit` (at most MAX_LIST_RECORDS) records matching `state` (-1 = any)
        that the live nodes own, and how many others matched."""
        c = self.ctx
        limit = max(1, min(int(limit), MAX_LIST_RECORDS))
        p = _Pending("list", "", now + c.config.request_timeout, state=state, limit=limit)
        self._merge(p, *self.list_page(state, limit))
        self._new(req, p)
        for n in c.view.live_nodes():
            if c.send_to(n, TaskList(req, state, limit)):
                p.waiting.add(n)
        if not p.waiting:
            self._list_done(req, p)

    def list_page(self, state: int, limit: int) -> tuple[tuple[TaskRecord, ...], int]:
        """Summaries of the records this node owns that match `state`, newest first: at most
        `limit` and no more than fit in one message; and how many more matched."""
        c = self.ctx
        owned = _newest_first(
            r for r in self.owner.store.records.values()
            if (state < 0 or int(r.state) == state) and c.owner_of(r) == c.node_id
        )  # fmt: skip
        page: list[TaskRecord] = []
        size = 0
        for r in owned[:limit]:
            s = summary(r)
            size += record_size(s)
            if size > LIST_BYTES:
                break
            page.append(s)
        more = len(owned) - len(page)
        if more:
            c.stats["list_records_left_out"] += more
        return tuple(page), more

    def on_list(self, sender_addr: str, q: TaskList) -> None:
        self.ctx.send(sender_addr, TaskListReply(q.req, *self.list_page(q.state, q.limit)))

    def on_list_reply(self, sender: str, r: TaskListReply) -> None:
        p = self.pending.get(r.req)
        if p is None or p.kind != "list" or sender not in p.waiting:
            self.ctx.stats["stale_replies"] += 1
            return
        p.waiting.discard(sender)
        self._merge(p, r.records, r.more)
        if not p.waiting:
            self._list_done(r.req, p)

    @staticmethod
    def _merge(p: _Pending, records: tuple[TaskRecord, ...], more: int) -> None:
        p.omitted += more
        for rec in records:
            if (p.state < 0 or int(rec.state) == p.state) and newer(rec, p.records.get(rec.id)):
                p.records[rec.id] = rec
        if len(p.records) > 2 * p.limit:  # what a list holds stays bounded: keep the newest
            kept = _newest_first(p.records.values())[: p.limit]
            p.omitted += len(p.records) - len(kept)  # (a copy a second owner sends again
            p.records = {r.id: r for r in kept}  # while ownership moves is counted twice)

    def _list_done(self, req: int, p: _Pending) -> None:
        kept = _newest_first(p.records.values())[: p.limit]
        rows: list[dict[str, Any]] = []
        size = 0
        for r in kept:
            row = task_row(r)
            size += len(msgpack.packb(row, use_bin_type=True))
            if size > LIST_BYTES:
                break
            rows.append(row)
        rows.reverse()  # oldest first
        omitted = p.omitted + len(p.records) - len(rows)
        self._reply(req, True, {"tasks": rows, "omitted": omitted, "unanswered": len(p.waiting),
                                "partial": bool(p.waiting) or omitted > 0})  # fmt: skip

    # ------------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        for req, p in list(self.pending.items()):
            if p.kind == "submit":
                if now >= p.deadline:
                    n = len(p.record.replicas)
                    where = ("its owner did not confirm that its replicas hold it"
                             if p.via_owner else
                             f"it is stored on {n - len(p.waiting)} of {n} replicas, not all")
                    self._reply(req, False, error=(
                        f"task {p.task_id}: {where}; submit again with --id {p.task_id} to "
                        "retry"))  # fmt: skip
                elif now >= p.next_resend:
                    self._resend(now, p)
            elif now >= p.deadline:
                if p.kind == "list":
                    self._list_done(req, p)
                elif p.kind == "cancel":
                    self._cancel_failed(req, p)
                else:
                    p.waiting.clear()
                    self._lookup_done(now, req, p)

    def next_wakeup(self) -> float:
        t = float("inf")
        for p in self.pending.values():
            t = min(t, p.deadline, p.next_resend if p.kind == "submit" else t)
        return t

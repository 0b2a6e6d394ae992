"""One node's placement core (pure): worker, record owner and client requests over one view.

It holds no sockets and reads no clock. Drive it like any core (`on_message`, `on_tick`,
`next_wakeup`), feed it load samples (`observe_load`) and run outcomes (`on_task_exit`); each
of those calls returns what it wants done, in order, as one list of effects (`agent.effects`):
messages to send, runs to start or stop, client replies. `agent.node.NodeCore` pairs it with
the membership core it reads its view from.
"""

from __future__ import annotations

import math
import random
from typing import Any

from agent.context import Context
from agent.effects import Effect
from agent.execution import TaskExit
from agent.forecast_tracker import ForecastTracker
from agent.ledger import EPS, Ledger
from agent.messages import (
    MAX_LIST_RECORDS,
    Award,
    AwardAck,
    Bid,
    BidRequest,
    Release,
    ReportAck,
    TaskCancel,
    TaskCancelReply,
    TaskGet,
    TaskGetReply,
    TaskList,
    TaskListReply,
    TaskPut,
    TaskPutAck,
    TaskReport,
)
from agent.owner import Owner
from agent.placement_config import PlacementConfig
from agent.policies import make_policy
from agent.requests import Requests
from agent.tasks import TaskSpec
from agent.worker import Worker
from gossip.membership import Membership
from gossip.messages import Message


def gossipable(forecast: tuple[float, ...], n: int) -> tuple[float, ...]:
    """The forecast as it may be gossiped: `n` peaks, each a share of this node (clamped to
    0..1), non-decreasing with the horizon; () — peers then use the load — if it has another
    length or any value is not finite. Peers treat any other forecast as absent."""
    if len(forecast) != n or not all(math.isfinite(x) for x in forecast):
        return ()
    out, top = [], 0.0
    for x in forecast:
        top = max(top, min(1.0, max(0.0, x)))
        out.append(top)
    return tuple(out)


class PlacementCore:
    def __init__(
        self, view: Membership, config: PlacementConfig | None = None,
        rng: random.Random | None = None, forecaster: Any = None,
    ) -> None:  # fmt: skip
        """`forecaster`: a shared peak forecaster (`agent.forecast_tracker.make_forecaster`:
        the meta-initialization, or an ablation); None = no forecast, bids and gossip use the
        current load. ValueError if it lacks the configured horizons or quantile."""
        self.config = config or PlacementConfig()
        rec = view.resources
        self.ctx = Context(view.node_id, view.addr, view, self.config, rng or random.Random())
        self.ledger = Ledger(rec.cpus, rec.memory, rec.gpus)
        self.worker = Worker(self.ctx, self.ledger)
        cfg = self.config
        policy = make_policy(cfg.policy, cfg.forecast_step, cfg.forecast_horizons)
        self.owner = Owner(self.ctx, policy)
        self.requests = Requests(self.ctx, self.owner)
        self.tracker = (
            ForecastTracker(forecaster, cfg.forecast_step, cfg.forecast_history,
                            cfg.readapt_every, cfg.forecast_horizons,
                            cfg.forecast_quantile)  # fmt: skip
            if forecaster is not None else None
        )
        self._forecast_stale = False  # a sample came in since worker.forecast was set
        self._published: tuple[float, tuple[float, ...], float, float] | None = None
        self._gossip_load: tuple[float, float] | None = None  # (smoothed load, when): `_smooth`
        self._next_publish = 0.0

    @property
    def stats(self):
        return self.ctx.stats

    # ------------------------------------------------------------------ driving

    def on_message(self, now: float, msg: Message) -> list[Effect]:
        self._dispatch(now, msg)
        return self._flush(now)

    def _dispatch(self, now: float, msg: Message) -> None:
        b = msg.body
        s, a = msg.sender, msg.sender_addr
        w, o, r = self.worker, self.owner, self.requests
        match b:
            case BidRequest():
                self._refresh_forecast()
                w.on_bid_request(now, a, b)
            case Bid():
                o.on_bid(now, s, a, b)
            case Award():
                w.on_award(now, s, a, b)
            case AwardAck():
                o.on_award_ack(now, s, b)
            case Release():
                w.on_release(a, b)
            case TaskReport():
                o.on_report(now, s, a, b)
            case ReportAck():
                w.on_report_ack(b)
            case TaskPut():
                o.on_put(now, s, a, b)
            case TaskPutAck():
                o.on_put_ack(now, s, a, b)
                r.on_put_ack(now, s, b)
            case TaskGet():
                o.on_get(a, b)
            case TaskGetReply():
                r.on_get_reply(now, s, b)
            case TaskList():
                r.on_list(a, b)
            case TaskListReply():
                r.on_list_reply(s, b)
            case TaskCancel():
                o.on_cancel(now, a, b)
            case TaskCancelReply():
                r.on_cancel_reply(now, s, b)
            case _:
                self.ctx.stats["unexpected_messages"] += 1

    def _flush(self, now: float) -> list[Effect]:
        """Deliver messages addressed to ourselves, then hand back what the shell is to do."""
        c = self.ctx
        for _ in range(10_000):  # bounded: local exchanges are a few steps deep
            if not c.local:
                break
            batch, c.local = c.local, []
            for m in batch:
                self._dispatch(now, m)
        out, c.effects = c.effects, []
        return out

    def on_tick(self, now: float) -> list[Effect]:
        self.worker.tick(now)
        self.owner.tick(now)
        self.requests.tick(now)
        self._publish(now)
        return self._flush(now)

    def next_wakeup(self) -> float:
        return min(self.worker.next_wakeup(), self.owner.next_wakeup(),
                   self.requests.next_wakeup(), self._next_publish)  # fmt: skip

    # ------------------------------------------------------------------ inputs from the shell

    def submit(self, now: float, req: int, task_id: str, spec: TaskSpec) -> list[Effect]:
        self.requests.submit(now, req, task_id, spec)
        return self._flush(now)

    def get(self, now: float, req: int, task_id: str) -> list[Effect]:
        self.requests.get(now, req, task_id)
        return self._flush(now)

    def list(self, now: float, req: int, state: int = -1,
             limit: int = MAX_LIST_RECORDS) -> list[Effect]:  # fmt: skip
        self.requests.list(now, req, state, limit)
        return self._flush(now)

    def cancel(
        self, now: float, req: int, task_id: str, by: str | None = None,
    ) -> list[Effect]:  # fmt: skip
        self.requests.cancel(now, req, task_id, by)
        return self._flush(now)

    def on_task_exit(self, now: float, e: TaskExit) -> list[Effect]:
        self.worker.on_task_exit(now, e)
        self.worker.tick(now)  # report at once
        return self._flush(now)

    def observe_load(self, now: float, load: float, tasks_load: float | None = None) -> None:
        """One load sample of this machine (0..1). The forecaster learns the background load:
        the sample minus what this node's own tasks use — `tasks_load` when the shell measured
        it, else their reserved share. (Reservations misread a saturated node: its sample
        cannot exceed 1, so load − reserved would understate the background.)"""
        load = min(1.0, max(0.0, float(load)))
        self.worker.load = load
        self._smooth(now, load)
        if self.tracker is not None:
            if tasks_load is None:
                tasks_load = self.ledger.committed().cpus / max(self.ledger.capacity.cpus, EPS)
            self.tracker.observe(now, max(0.0, load - tasks_load))
            self._forecast_stale = True  # forecast when asked for: a bid or a publish
            self._tracker_stats()

    def _refresh_forecast(self) -> None:
        """The worker's forecast from the tracker, if a sample came in since it was taken (a
        node fed a long history at once forecasts once, not once per step)."""
        if self._forecast_stale and self.tracker is not None:
            self._forecast_stale = False
            self.worker.forecast = self.tracker.published()
            self._tracker_stats()

    def _tracker_stats(self) -> None:
        tr, st = self.tracker, self.ctx.stats
        if tr.fallbacks != st["forecast_fallbacks"] or tr.failures != st["forecast_failures"]:
            st["forecast_fallbacks"], st["forecast_failures"] = tr.fallbacks, tr.failures

    def stop_accepting(self) -> None:
        self.worker.accepting = False

    # ------------------------------------------------------------------ gossip

    def _smooth(self, now: float, load: float) -> None:
        """The load others are told: an exponential average over `publish_smoothing` seconds.
        Gossiping each raw sample republished the record every `publish_interval` on any busy
        machine (its samples move by more than `publish_delta` from one to the next), most of
        an idle agent's bytes; this node's own bids still use the latest sample."""
        prev = self._gossip_load
        if prev is None:
            self._gossip_load = (load, now)
            return
        avg, then = prev
        tau = self.config.publish_smoothing
        w = 1.0 - math.exp(-max(0.0, now - then) / tau)
        self._gossip_load = (avg + w * (load - avg), now)

    def _publish(self, now: float) -> None:
        """Put load, forecast and allocation in the gossiped record when they moved enough."""
        if now < self._next_publish:
            return
        cfg = self.config
        self._next_publish = now + cfg.publish_interval
        self._refresh_forecast()
        load = self._gossip_load[0] if self._gossip_load else self.worker.load
        forecast = gossipable(self.worker.forecast, len(cfg.forecast_horizons))
        alloc = self.ledger.committed()
        last = self._published
        if last is not None:
            l0, f0, a0, t0 = last
            moved = (
                abs(load - l0) >= cfg.publish_delta
                or abs(alloc.cpus - a0) > EPS
                or len(forecast) != len(f0)
                or any(abs(x - y) >= cfg.publish_delta for x, y in zip(forecast, f0, strict=False))
            )
            if not moved and now - t0 < cfg.publish_heartbeat:
                return
        self.ctx.view.update_resources(
            now, load=load, forecast=forecast, alloc_cpus=alloc.cpus,
            alloc_memory=alloc.memory, alloc_gpus=alloc.gpus,
        )  # fmt: skip
        self._published = (load, forecast, alloc.cpus, now)

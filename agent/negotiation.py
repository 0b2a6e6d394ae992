"""Negotiating where a pending task runs: a round asks a few candidates (the policy's choice)
for bids, and closes when all answered or at its deadline with a winner among the yes-bids;
a round no node had room in is retried after a jittered, doubling back-off. When gossip shows
the policy's first choice with ample room, the task is awarded there without a round (a
direct award, round 0): the award then reserves nothing ahead, and a refusal brings a round.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field

from agent.context import Context
from agent.ledger import EPS
from agent.messages import Bid, BidRequest, Release
from agent.policies import Policy
from agent.policies.base import Candidate, gossiped_headroom
from agent.records import could_run
from agent.tasks import TaskRecord
from gossip.messages import Status


@dataclass(slots=True)
class Round:
    attempt: int
    no: int
    asked: list[Candidate]
    deadline: float
    bids: dict[str, Bid] = field(default_factory=dict)

    @property
    def answered(self) -> bool:
        """Every candidate asked has answered."""
        return len(self.bids) == len(self.asked)


@dataclass(slots=True)
class Negotiation:
    """The owner's negotiation state for one pending record."""

    round: Round | None = None
    rounds: int = 0
    next_try: float = 0.0
    backoff: float = 0.0
    direct_refused: bool = False  # a direct award of this record was refused: bid from now on


DIRECT = 0  # the round number of a direct award: no round, no lease behind it


class Negotiator:
    def __init__(self, ctx: Context, policy: Policy) -> None:
        self.ctx = ctx
        self.policy = policy
        # CPUs this owner awarded directly, per node, not yet in that node's gossip:
        # node -> [(until, cpus)]
        self._awarded: dict[str, list[tuple[float, float]]] = {}
        # this owner's placements that gossip cannot show yet, as a heap of when they can:
        # awards until twice `publish_interval` after, rounds until their deadline
        self._unseen: list[float] = []

    def candidates(self, rec: TaskRecord) -> list[Candidate]:
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
        roomy = [x for x in out if x.record.cpus - x.record.alloc_cpus + EPS >= s.cpus
                 and x.record.memory - x.record.alloc_memory >= s.memory
                 and x.record.gpus - x.record.alloc_gpus >= s.gpus]  # fmt: skip
        return roomy or out

    def direct_pick(self, now: float, rec: TaskRecord, neg: Negotiation) -> Candidate | None:
        """The node to award `rec` to without a round: the policy's choice among `bids` nodes
        drawn at random from those that have, by their gossip (allocation, and background: its
        forecast peak over the task's run, else the current load) less what this owner awarded
        there since, `direct_award_room` of their CPUs free with the task on them (and the
        memory and GPUs it needs); None if none has. Judged by allocation alone, tasks went
        without a round to nodes whose background would fill them during the run, where a bid
        round would have weighed the bidders' forecasts (long-tasks at 90 % load: predictive
        missed more deadlines than least-loaded).

        Drawn at random first because every owner ranks the same gossip, which lags: taking
        the best of all, every owner sent its tasks to the same node until its gossip caught
        up (in a 2,000-task burst on 20 real agents, two of them ran 63 % of the tasks and
        the burst's tail waited on their spawns). The best of a few random choices does not
        herd on stale information (the power of d choices)."""
        c = self.ctx
        cfg = c.config
        if not cfg.direct_awards or neg.direct_refused:
            return None
        s = rec.spec
        step, horizons = cfg.forecast_step, cfg.forecast_horizons
        self._forget_shown(now)
        cands = [x for x in self.candidates(rec)
                 if gossiped_headroom(x.record, s, step, horizons) - self._recent(now, x.node)
                 - s.cpus >= cfg.direct_award_room * x.record.cpus - EPS
                 and x.record.memory - x.record.alloc_memory >= s.memory
                 and x.record.gpus - x.record.alloc_gpus >= s.gpus]  # fmt: skip
        if not cands:
            return None
        drawn = c.rng.sample(cands, min(cfg.bids, len(cands)))
        chosen = self.policy.choose(s, drawn, 1, c.rng)
        return chosen[0] if chosen else None

    def awarded_directly(self, now: float, node: str, cpus: float) -> None:
        """Count a direct award against `node` until its gossip can show it (a republish is
        at most `publish_interval` away, twice that for the gossip to arrive)."""
        self._awarded.setdefault(node, []).append(
            (now + 2 * self.ctx.config.publish_interval, cpus))
        self._hide_until(now + 2 * self.ctx.config.publish_interval)
        self.ctx.stats["direct_awards"] += 1

    def _hide_until(self, t: float) -> None:
        heapq.heappush(self._unseen, t)

    def bid_pool(self, now: float, cands: list[Candidate]) -> list[Candidate]:
        """The candidates a round's policy chooses from: with u of this owner's placements
        that gossip cannot show yet (open rounds, awards until twice `publish_interval`
        after), a random d / (1 + u) of them, at least d: then no node is expected in more
        than d of the pools of the 1 + u decisions made on one view. While u < d, all.

        Every owner ranks the same gossip, which lags: under a burst every round asked the
        same top d nodes until their gossip caught up (2,000 tasks on 20 real agents sharing
        one busy machine: two agents ran 302 and 359). Shrinking pools spread such decisions
        like the power of d choices, while a quiet owner still ranks the whole cluster
        (long-tasks: predictive's lead comes from the best forecast headroom of all)."""
        self._forget_shown(now)
        d = self.ctx.config.bids
        k = max(d, math.ceil(len(cands) * d / (1 + len(self._unseen))))
        if k >= len(cands):
            return cands
        self.ctx.stats["bid_pools_drawn"] += 1
        return self.ctx.rng.sample(cands, k)

    def _forget_shown(self, now: float) -> None:
        """Drop what gossip can show by now. Every direct award is hidden exactly as long as
        it is counted against its node, so with nothing hidden nothing is counted: awards to
        nodes never weighed again (they left) are forgotten too, not kept for the owner's
        life."""
        unseen = self._unseen
        while unseen and unseen[0] <= now:
            heapq.heappop(unseen)
        if not unseen:
            self._awarded.clear()

    def _recent(self, now: float, node: str) -> float:
        held = self._awarded.get(node)
        if not held:
            return 0.0
        held[:] = [x for x in held if x[0] > now]
        if not held:
            del self._awarded[node]
        return sum(cpus for _, cpus in held)

    def start_round(self, now: float, rec: TaskRecord, neg: Negotiation) -> None:
        c = self.ctx
        cands = self.bid_pool(now, self.candidates(rec))
        asked = self.policy.choose(rec.spec, cands, c.config.bids, c.rng) if cands else []
        if not asked:
            c.stats["no_candidates"] += 1
            self.back_off(now, neg)
            return
        self._hide_until(now + c.config.bid_timeout)
        neg.rounds += 1
        rnd = Round(rec.attempt + 1, neg.rounds, asked, now + c.config.bid_timeout)
        neg.round = rnd
        s = rec.spec
        q = BidRequest(rec.id, rnd.attempt, rnd.no, s.cpus, s.memory, s.gpus, dict(s.labels),
                       s.expected)  # fmt: skip
        for cand in asked:
            c.send(cand.addr, q)
        c.stats["bid_requests"] += len(asked)

    def back_off(self, now: float, neg: Negotiation) -> None:
        cfg = self.ctx.config
        neg.backoff = min(cfg.backoff_max, max(cfg.backoff_min, neg.backoff * 2))
        neg.next_try = now + neg.backoff * self.ctx.rng.uniform(0.5, 1.0)

    def take_bid(self, now: float, sender: str, sender_addr: str, b: Bid,
                 neg: Negotiation | None) -> bool:  # fmt: skip
        """Note a bid; True when every candidate asked has answered in time."""
        c = self.ctx
        rnd = neg.round if neg is not None else None
        if rnd is None or rnd.attempt != b.attempt or rnd.no != b.round or not any(
            cand.node == sender for cand in rnd.asked
        ):
            # a late bid for a closed round, or one never asked for: free its lease at once
            c.stats["unsolicited_bids"] += 1
            if b.ok:
                c.send(sender_addr, Release(b.task_id, b.attempt, b.round))
            return False
        rnd.bids[sender] = b
        # past the deadline the round should be closed already (we were stopped): the owner
        # decides at its next look, after re-confirming its copy (`Owner.tick`)
        return rnd.answered and now <= rnd.deadline

    def decide(
        self, now: float, rec: TaskRecord, neg: Negotiation,
    ) -> tuple[Round, Candidate] | None:  # fmt: skip
        """Close the open round: its winner, or None when it is to be tried again at
        `neg.next_try` (every lease ran out, or no node had room)."""
        c = self.ctx
        rnd = neg.round
        neg.round = None
        tid = rec.id
        by_node = {cand.node: cand for cand in rnd.asked}
        if now >= rnd.deadline - c.config.bid_timeout + c.config.lease:
            # every yes-bid's lease has run out (we were held up): ask again, never award on
            # a reservation the bidder no longer holds
            for n, b in rnd.bids.items():
                if b.ok:
                    c.send(by_node[n].addr, Release(tid, rnd.attempt, rnd.no))
            c.stats["rounds_expired"] += 1
            neg.next_try = now
            return None
        yes = [rnd.bids[cand.node] for cand in rnd.asked
               if cand.node in rnd.bids and rnd.bids[cand.node].ok]
        if not yes:
            c.stats["rounds_without_room"] += 1
            self.back_off(now, neg)
            return None
        win = self.policy.pick(rec.spec, yes, c.rng)
        winner = next(n for n, b in rnd.bids.items() if b is win)
        for n, b in rnd.bids.items():
            if b.ok and n != winner:
                c.send(by_node[n].addr, Release(tid, rnd.attempt, rnd.no))
        neg.backoff = 0.0
        self._hide_until(now + 2 * c.config.publish_interval)
        return rnd, by_node[winner]

    def release(self, neg: Negotiation) -> None:
        """Abandon the open round, if any, freeing the yes-bidders' leases."""
        rnd, neg.round = neg.round, None
        if rnd is None:
            return
        for n, b in rnd.bids.items():
            if b.ok:
                addr = next(cand.addr for cand in rnd.asked if cand.node == n)
                self.ctx.send(addr, Release(b.task_id, b.attempt, b.round))

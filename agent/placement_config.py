"""Timing and sizing of task placement and replication, shared by the real and simulated shell."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.policies import NAMES as POLICY_NAMES
from gossip.config import check_positive, from_table
from gossip.messages import MAX_FORECAST

MAX_HORIZON = 100_000  # forecast steps (a year of 5-minute steps); more is a typo


@dataclass(frozen=True)
class PlacementConfig:
    """Every field is settable from the agent's TOML ``[placement]`` table. Times are seconds."""

    policy: str = "predictive"  # predictive | least-loaded | sparrow | random | round-robin
    bids: int = 2  # d: candidates asked for a bid per negotiation round
    replicas: int = 3  # r: nodes holding each task record
    # Award a task without a bid round when the node the policy prefers has, by its gossip (and
    # this owner's own recent awards there), at least `direct_award_room` of its CPUs free with
    # the task on it: a round costs two hops and 4-5 messages, and on a roomy cluster every
    # bidder says yes. Its award commits only if the task fits there; else a bid round follows.
    direct_awards: bool = True
    direct_award_room: float = 0.5
    bid_timeout: float = 0.5  # a round closes when every candidate answered or after this
    lease: float = 2.0  # a yes-bid reserves its resources this long unless awarded
    max_leases: int = 1024  # yes-bids outstanding at once; beyond, bids are refused (counted)
    award_timeout: float = 1.0  # re-send the award if the winner has not confirmed
    award_retries: int = 3  # then give the task back to negotiation
    backoff_min: float = 0.2  # wait before retrying a task no node had room for...
    backoff_max: float = 5.0  # ...doubling up to this
    put_timeout: float = 1.0  # re-send a record to replicas that have not acknowledged it
    submit_timeout: float = 5.0  # a submit fails if its record is not on every replica by then
    request_timeout: float = 1.5  # lookups (status, tasks, cancel) wait this long for answers
    heartbeat: float = 2.0  # a runner tells the owner "still running" this often
    report_retry: float = 1.0  # a runner re-sends its final report until the owner confirms
    runner_silence: float = 30.0  # re-place a task whose live runner has not reported this long
    # A task whose runner failed is placed again only this long after, and a node that sees a
    # majority again decides only this long after: time for the rest of a partition (or of its
    # heal) to show in the membership view, so that two sides never both move a task on
    partition_grace: float = 2.0
    forecast_step: float = 300.0  # seconds per load sample the forecaster works on
    # steps kept for adaptation: two days (two daily cycles) + the longest horizon (8 h)
    forecast_history: int = 672
    readapt_every: int = 12  # re-adapt the forecaster after this many new samples
    # gossiped: the peak background over each of these horizons (in forecast steps; the
    # forecaster must predict each), at this quantile of the peak (one the forecaster has)
    forecast_horizons: tuple[int, ...] = (1, 6, 24, 96)
    forecast_quantile: float = 0.9
    publish_interval: float = 2.0  # publish allocation/forecast changes at most this often
    publish_delta: float = 0.05  # ...and only if load or forecast moved this much
    # or this long has passed (push-pull repairs a lost update well before; a republish every
    # 10 s was, at 50 nodes, most of the bytes an idle agent sent)
    publish_heartbeat: float = 300.0
    publish_smoothing: float = 10.0  # the gossiped load is averaged over about this long
    retention: float = 3600.0  # a finished task's record (and output) is kept this long
    tombstone_retention: float = 86_400.0  # then only its id and outcome, this long
    max_tombstones: int = 100_000  # the oldest are dropped beyond this
    max_active_records: int = 10_000  # unfinished records held; new ones beyond are refused
    max_tasks_per_client: int = 1000  # unfinished tasks of one client a node holds
    # A node that sees no more than half of the cluster's members alive (its side of a partition
    # is the smaller, or half) decides nothing until it does: no placement, no re-placement, no
    # result recorded, so that the two sides of a partition never record two results for one
    # task. True keeps deciding there (available under partition, results at least once).
    minority_decides: bool = False

    def __post_init__(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise ValueError(
                f"placement.policy must be one of {', '.join(POLICY_NAMES)}, got {self.policy!r}"
            )
        for name in ("minority_decides", "direct_awards"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"placement.{name} must be true or false, got {getattr(self, name)!r}"
                )
        self._check_forecast_fields()
        check_positive(self, "placement", skip=("policy", "minority_decides", "direct_awards",
                                                "forecast_horizons", "forecast_quantile"))
        if self.direct_award_room > 1.0:
            raise ValueError("placement.direct_award_room is a fraction of the node's CPUs, "
                             f"at most 1, got {self.direct_award_room!r}")

    def _check_forecast_fields(self) -> None:
        hs = self.forecast_horizons
        ok = isinstance(hs, list | tuple) and 0 < len(hs) <= MAX_FORECAST and all(
            isinstance(h, int) and not isinstance(h, bool) and 1 <= h <= MAX_HORIZON for h in hs
        ) and all(a < b for a, b in zip(hs, hs[1:], strict=False))
        if not ok:
            raise ValueError(
                "placement.forecast_horizons must be 1 to "
                f"{MAX_FORECAST} increasing whole numbers of steps in 1..{MAX_HORIZON}, got {hs!r}"
            )
        object.__setattr__(self, "forecast_horizons", tuple(hs))
        q = self.forecast_quantile
        if isinstance(q, bool) or not isinstance(q, int | float) or not 0.0 < q < 1.0:
            raise ValueError(
                f"placement.forecast_quantile must be a number strictly between 0 and 1, got {q!r}"
            )
        object.__setattr__(self, "forecast_quantile", float(q))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlacementConfig:
        return from_table(cls, d, "placement")

"""A node's background-load forecast, kept up to date from its own samples (pure: time is
passed in).

The agent core feeds one load sample at a time (a fraction 0..1, at any rate) with the time it
was taken; the tracker keeps one value per ``step`` seconds — the mean of the samples taken in
that step — in a bounded history, re-adapts the peak forecaster to that history every
``readapt_every`` steps, and answers "how high will the background go over the next N
seconds"::

    fc = make_forecaster("meta")                   # once per process, shared by every tracker
    tr = ForecastTracker(fc, step=300.0)           # the traces' step: 5 minutes
    tr.observe(now, load)                          # whenever the agent samples its load
    tr.peak(3600.0)                                # 0.9-quantile of the peak over the next hour
    tr.published()                                 # that peak per horizon: what is gossiped

Forecasters (:data:`KINDS`) have the interface of :mod:`metalearn.peak_runtime`: ``spec``
(a :class:`~metalearn.peaks.PeakSpec`), ``adapt(history) -> node`` and
``node.forecast(history) -> PeakForecast``, ``node.shots``, ``node.fell_back``. Peak forecasters
are scale-free, so the tracker gives them its fractions as they are.

Steps are counted from the first sample's time. Samples in the same step are averaged; when a
sample arrives after one or more steps without any, those steps repeat the last step's value;
a sample timed before the current step (clock stepped back) counts toward the current step.
The value of the step in progress is not used until the step is over.

A forecaster never takes the agent down: an adaptation or a forecast that raises, or a
forecast that is not finite, is counted (``failures``) and the node uses its last value (the
previous adaptation is kept for the next try). Adaptations the forecaster itself discarded
(``node.fell_back``: it kept the meta-initialization) are counted as ``fallbacks``.

Nothing here reads a clock or does I/O; adaptation runs inside :meth:`observe` when due.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from agent.policies.base import covering
from metalearn.peaks import PeakForecast, PeakSpec

__all__ = ["KINDS", "ForecastTracker", "check_forecaster", "make_forecaster"]

log = logging.getLogger(__name__)

# forecaster kinds an agent (or a simulated node) can run
KINDS = ("meta", "meta-init", "last-value", "none")


def make_forecaster(kind: str) -> Any:
    """The forecaster of a kind: ``meta`` (the shipped meta-initialization, adapted on each
    node), ``meta-init`` (the same, never adapted: ablation), ``last-value`` (ablation) or
    ``none`` (None: bids and gossip use the current load). ValueError for an unknown kind;
    :class:`~metalearn.errors.ForecastError` if the shipped file cannot be read."""
    if kind == "none":
        return None
    if kind == "last-value":
        from metalearn.peak_runtime import LastValuePeak

        return LastValuePeak()
    if kind in ("meta", "meta-init"):
        from metalearn.peak_runtime import PeakForecaster

        return PeakForecaster.load(adapt=kind == "meta")
    raise ValueError(f"unknown forecaster {kind!r} (known: {', '.join(KINDS)})")


def check_forecaster(forecaster: Any, horizons: Sequence[int], quantile: float) -> None:
    """ValueError (one line) unless the forecaster predicts every horizon and the quantile."""
    spec = getattr(forecaster, "spec", None)
    if not isinstance(spec, PeakSpec):
        raise ValueError(f"forecaster {type(forecaster).__name__} has no peak spec")
    missing = [h for h in horizons if h not in spec.horizons]
    if missing:
        raise ValueError(f"the forecaster predicts horizons {list(spec.horizons)} (steps), "
                         f"not {missing}: set placement.forecast_horizons to some of those")
    if quantile not in spec.quantiles:
        raise ValueError(f"the forecaster predicts peak quantiles {list(spec.quantiles)}, not "
                         f"{quantile}: set placement.forecast_quantile to one of those")


class _Node(Protocol):
    shots: int
    fell_back: bool

    def forecast(self, history: np.ndarray) -> PeakForecast: ...


class _Forecaster(Protocol):
    spec: PeakSpec

    def adapt(self, history: np.ndarray) -> _Node: ...


class ForecastTracker:
    """One node's background history, adapted forecaster and peak forecast."""

    def __init__(
        self,
        forecaster: _Forecaster,
        step: float,
        history: int = 672,
        readapt_every: int = 12,
        horizons: Sequence[int] | None = None,
        quantile: float = 0.9,
    ) -> None:
        """``history``: steps kept (the default, 2 days + 8 h of 5-minute steps, holds two
        daily cycles and the longest default horizon); ``readapt_every``: new steps between
        adaptations; ``horizons`` (steps, default the forecaster's) and ``quantile``: what
        :meth:`published` and :meth:`peak` answer from."""
        self.forecaster = forecaster
        self.spec: PeakSpec = forecaster.spec
        self.horizons = tuple(int(h) for h in (horizons or self.spec.horizons))
        self.quantile = float(quantile)
        check_forecaster(forecaster, self.horizons, self.quantile)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a positive number of seconds, got {step}")
        self.window = int(self.spec.window)
        if history < self.window:
            raise ValueError(f"history ({history}) must hold at least one window ({self.window})")
        if readapt_every < 1:
            raise ValueError(f"readapt_every must be >= 1, got {readapt_every}")
        self.step = float(step)
        self.readapt_every = int(readapt_every)
        self._cols = [self.spec.horizons.index(h) for h in self.horizons]
        self._hist: deque[float] = deque(maxlen=int(history))
        self._t0: float | None = None  # time of the first sample: step 0 starts there
        self._cur = 0  # index of the step in progress
        self._sum = 0.0  # samples of the step in progress
        self._n = 0
        self._since_adapt = 0  # closed steps since the last adaptation
        self._node: _Node | None = None  # None until `window` steps are closed
        self._cached: dict[float, tuple[float, ...]] | None = None  # quantile -> peaks
        self.adaptations = 0
        self.fallbacks = 0  # adaptations the forecaster discarded (node.fell_back)
        self.failures = 0  # adaptations or forecasts that raised or were not finite

    # --- input ------------------------------------------------------------------------------

    def observe(self, now: float, load: float) -> None:
        """Record one load sample (fraction of capacity, clamped to 0..1) taken at ``now`` (s)."""
        if not math.isfinite(now):
            raise ValueError(f"observe: time must be finite, got {now}")
        if not math.isfinite(load):
            raise ValueError(f"observe: load must be finite, got {load}")
        load = min(1.0, max(0.0, float(load)))
        if self._t0 is None:
            self._t0 = float(now)
        idx = max(self._cur, math.floor((now - self._t0) / self.step))
        if idx > self._cur and self._n:
            value = self._sum / self._n
            # the finished step, then the missed ones repeating it (at most a full history)
            self._append(value, 1 + min(idx - self._cur - 1, self._hist.maxlen or 0))
            self._sum, self._n = 0.0, 0
        self._cur = idx
        self._sum += load
        self._n += 1

    def _append(self, value: float, count: int) -> None:
        self._hist.extend([value] * count)
        self._since_adapt += count
        self._cached = None
        if len(self._hist) >= self.window and (
            self._node is None or self._since_adapt >= self.readapt_every
        ):
            self._since_adapt = 0
            self._adapt()

    def _adapt(self) -> None:
        try:
            node = self.forecaster.adapt(np.asarray(self._hist, dtype=np.float64))
        except Exception as e:  # noqa: BLE001 - a forecaster must never take the agent down
            self._fail("forecaster adaptation", e)
            return
        self._node = node
        self.adaptations += 1
        if getattr(node, "fell_back", False):
            self.fallbacks += 1

    def _fail(self, what: str, e: BaseException | str) -> None:
        self.failures += 1
        if self.failures == 1 or self.failures % 1000 == 0:
            log.warning("%s failed (%d so far), using the last value: %s",
                        what, self.failures, e)  # fmt: skip

    # --- output -----------------------------------------------------------------------------

    @property
    def samples(self) -> int:
        """Completed steps in the history (at most ``history``)."""
        return len(self._hist)

    @property
    def loads(self) -> tuple[float, ...]:
        """The kept per-step loads (fractions), oldest first."""
        return tuple(self._hist)

    @property
    def shots(self) -> int:
        """Support examples used by the current adaptation (0: none yet, or nothing adapted)."""
        return int(getattr(self._node, "shots", 0) or 0)

    def last(self) -> float:
        """The last complete step's value (before any: the mean so far of the step in
        progress; before any sample: 0.0)."""
        if self._hist:
            return self._hist[-1]
        return self._sum / self._n if self._n else 0.0

    def _peaks(self) -> dict[float, tuple[float, ...]] | None:
        """quantile -> peak per tracked horizon, fractions clamped to 0..1 and non-decreasing;
        None when the last value stands in (too little history, or a failed forecast)."""
        if self._node is None:
            return None
        if self._cached is None:
            try:
                fc = self._node.forecast(np.asarray(self._hist, dtype=np.float64))
                out = {}
                for q in self.spec.quantiles:
                    row = np.asarray(fc.peaks[q], dtype=np.float64)[self._cols]
                    if not np.all(np.isfinite(row)):
                        raise ValueError(f"non-finite peak forecast {row.tolist()}")
                    row = np.maximum.accumulate(np.clip(row, 0.0, 1.0))
                    out[q] = tuple(float(x) for x in row)
            except Exception as e:  # noqa: BLE001 - never take the agent down
                self._fail("forecast", e)
                out = {}
            self._cached = out
        return self._cached or None

    def published(self) -> tuple[float, ...]:
        """The ``quantile`` of the peak over each of ``horizons``, fractions 0..1,
        non-decreasing: what the node gossips (element i covers the next horizons[i] steps)."""
        peaks = self._peaks()
        if peaks is None:
            return (min(1.0, max(0.0, self.last())),) * len(self.horizons)
        return peaks[self.quantile]

    def peak(self, seconds: float, quantile: float | None = None) -> float:
        """The ``quantile`` (default the tracker's) of the peak background over the next
        ``seconds``, from the shortest tracked horizon that covers them (the longest if none
        does), a fraction 0..1."""
        if math.isnan(seconds):
            raise ValueError("peak: seconds is NaN")
        q = self.quantile if quantile is None else float(quantile)
        if q not in self.spec.quantiles:
            raise ValueError(f"peak: the forecaster has no quantile {q}")
        peaks = self._peaks()
        if peaks is None:
            return min(1.0, max(0.0, self.last()))
        return peaks[q][covering(self.horizons, self.step, seconds)]

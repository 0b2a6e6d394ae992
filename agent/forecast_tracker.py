"""A node's load forecast, kept up to date from its own samples (pure: time is passed in).

The agent core feeds one load sample at a time (a fraction 0..1, at any rate) with the time it
was taken; the tracker keeps one value per ``step`` seconds — the mean of the samples taken in
that step — in a bounded history, periodically re-adapts the forecaster to that history, and
answers "what load do we expect over the next N seconds"::

    fc = NumpyForecaster.load()                    # once per process, shared by every tracker
    tr = ForecastTracker(fc, step=300.0)           # the traces' step: 5 minutes
    tr.observe(now, load)                          # whenever the agent samples its load
    tr.forecast()                                  # horizon predicted fractions, 0..1
    tr.predicted_peak(900.0)                       # max predicted load over the next 15 min

Steps are counted from the first sample's time. Samples in the same step are averaged; when a
sample arrives after one or more steps without any, those steps repeat the last step's value;
a sample timed before the current step (clock stepped back) counts toward the current step.
The value of the step in progress is not used until the step is over.

The forecaster works in the traces' units, CPU % (0..100, see docs/forecasting.md): the
tracker multiplies its fractions by 100 before adapting/forecasting and divides the forecast
by 100, clamped to 0..1. Any object with ``window``, ``horizon`` and
``adapt(history) -> node`` where ``node.forecast(recent)`` returns ``horizon`` values is
accepted: :class:`~metalearn.numpy_runtime.NumpyForecaster` (torch-free, the one for agents),
:class:`metalearn.runtime.Forecaster`, or :class:`LastValueForecaster` (ablation).

Nothing here reads a clock or does I/O; adaptation (~0.1 ms with the numpy forecaster) runs
inside :meth:`ForecastTracker.observe` when due.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from metalearn.numpy_runtime import LastValueForecaster

__all__ = ["PERCENT", "ForecastTracker", "LastValueForecaster"]

PERCENT = 100.0  # forecaster units (CPU %) per load fraction


class _Node(Protocol):
    def forecast(self, recent: Sequence[float] | np.ndarray) -> Sequence[float] | np.ndarray: ...


class _Forecaster(Protocol):
    window: int
    horizon: int

    def adapt(self, history: Sequence[float] | np.ndarray) -> _Node: ...


class ForecastTracker:
    """One node's load history, adapted forecaster and forecast."""

    def __init__(
        self,
        forecaster: _Forecaster,
        step: float,
        history: int = 288,
        readapt_every: int = 12,
        min_history: int | None = None,
    ) -> None:
        """``history``: samples kept (one per ``step``); ``readapt_every``: new samples between
        adaptations; ``min_history``: samples needed before the first adaptation (default
        ``window + horizon``, one complete support window)."""
        self.forecaster = forecaster
        self.window = int(forecaster.window)
        self.horizon = int(forecaster.horizon)
        if not (math.isfinite(step) and step > 0):
            raise ValueError(f"step must be a positive number of seconds, got {step}")
        if min_history is None:
            min_history = self.window + self.horizon
        if not 1 <= min_history <= history:
            raise ValueError(
                f"need 1 <= min_history <= history, got min_history={min_history}, "
                f"history={history}"
            )
        if history < self.window:
            raise ValueError(f"history ({history}) must hold at least one window ({self.window})")
        if readapt_every < 1:
            raise ValueError(f"readapt_every must be >= 1, got {readapt_every}")
        self.step = float(step)
        self.min_history = int(min_history)
        self.readapt_every = int(readapt_every)
        self._hist: deque[float] = deque(maxlen=int(history))
        self._t0: float | None = None  # time of the first sample: step 0 starts there
        self._cur = 0  # index of the step in progress
        self._sum = 0.0  # samples of the step in progress
        self._n = 0
        self._since_adapt = 0  # closed steps since the last adaptation
        self.adaptations = 0
        self._node = forecaster.adapt(np.empty(0))  # meta-initialization, unadapted
        self._cached: tuple[float, ...] | None = None

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
        if len(self._hist) >= self.min_history and (
            self.adaptations == 0 or self._since_adapt >= self.readapt_every
        ):
            self._node = self.forecaster.adapt(np.asarray(self._hist) * PERCENT)
            self._since_adapt = 0
            self.adaptations += 1

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
        """Support windows used by the current adaptation (0: meta-initialization as is)."""
        return int(getattr(self._node, "shots", 0))

    def forecast(self) -> tuple[float, ...]:
        """Predicted load fractions (0..1) for the ``horizon`` steps after the last complete one.

        Before ``window`` steps are complete: the last complete step's value repeated (before
        the first step is complete, the mean so far of the step in progress), or 0.0 before
        any sample.
        """
        if self._cached is None:
            if len(self._hist) < self.window:
                last = (
                    self._hist[-1] if self._hist
                    else self._sum / self._n if self._n else 0.0
                )
                return (last,) * self.horizon  # not cached: the step in progress may change
            recent = np.fromiter(self._hist, dtype=np.float64)[-self.window:] * PERCENT
            pred = np.asarray(self._node.forecast(recent), dtype=np.float64) / PERCENT
            self._cached = tuple(float(v) for v in np.clip(pred, 0.0, 1.0))
        return self._cached

    def predicted_peak(self, seconds: float) -> float:
        """Max predicted load over the steps covering the next ``seconds`` (at least one step;
        beyond the horizon, the horizon's max)."""
        if math.isnan(seconds):
            raise ValueError("predicted_peak: seconds is NaN")
        if seconds >= self.horizon * self.step:
            n = self.horizon
        else:
            n = math.ceil(seconds / self.step) if seconds > 0 else 1
        return max(self.forecast()[:n])

"""ForecastTracker: stepping, bounded history, re-adaptation schedule, units, peaks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from agent.forecast_tracker import PERCENT, ForecastTracker, LastValueForecaster
from metalearn.data import load_bundle
from metalearn.numpy_runtime import NumpyForecaster
from scenarios.sim.background import SHIPPED_TRACES


class FakeNode:
    def __init__(self, tag: int, shots: int, out: Sequence[float] | None) -> None:
        self.tag, self.shots, self.out = tag, shots, out
        self.seen: list[np.ndarray] = []

    def forecast(self, recent: Sequence[float] | np.ndarray) -> np.ndarray:
        r = np.asarray(recent, dtype=float)
        self.seen.append(r)
        if self.out is not None:
            return np.asarray(self.out, dtype=float)
        return r[-1] + 10.0 * np.arange(1, 5)  # percent: last, +10, +20, ...


class FakeForecaster:
    window = 3
    horizon = 4

    def __init__(self, out: Sequence[float] | None = None) -> None:
        self.calls: list[np.ndarray] = []
        self.out = out

    def adapt(self, history: Sequence[float] | np.ndarray) -> FakeNode:
        h = np.asarray(history, dtype=float)
        self.calls.append(h)
        return FakeNode(len(self.calls), int(h.size >= 7), self.out)


def feed(tr: ForecastTracker, loads: Sequence[float], step: float = 60.0, t0: float = 0.0) -> None:
    for i, v in enumerate(loads):
        tr.observe(t0 + i * step, v)


def test_samples_in_one_step_are_averaged() -> None:
    tr = ForecastTracker(FakeForecaster(), step=60.0)
    tr.observe(1000.0, 0.2)
    tr.observe(1010.0, 0.4)
    tr.observe(1059.9, 0.6)
    assert tr.loads == ()  # the step in progress is not in the history
    assert tr.forecast() == pytest.approx((0.4,) * 4)  # before a window: last value so far
    tr.observe(1060.0, 0.9)
    assert tr.loads == pytest.approx((0.4,))
    tr.observe(1125.0, 0.1)
    assert tr.loads == pytest.approx((0.4, 0.9))


def test_gaps_repeat_the_last_value_and_history_is_bounded() -> None:
    tr = ForecastTracker(FakeForecaster(), step=60.0, history=10)
    tr.observe(0.0, 0.2)
    tr.observe(200.0, 0.5)  # steps 1 and 2 missed; step 3 in progress
    assert tr.loads == pytest.approx((0.2, 0.2, 0.2))
    tr.observe(240.0, 0.7)
    assert tr.loads == pytest.approx((0.2, 0.2, 0.2, 0.5))
    tr.observe(1e12, 0.3)  # a huge gap costs at most one full history
    assert tr.loads == pytest.approx((0.7,) * 10) and tr.samples == 10
    tr.observe(1e12 + 60.0, 0.3)
    assert tr.loads[-1] == pytest.approx(0.3) and tr.samples == 10


def test_clock_stepping_back_counts_toward_current_step() -> None:
    tr = ForecastTracker(FakeForecaster(), step=60.0)
    feed(tr, [0.1, 0.2, 0.3])  # steps 0, 1 closed, 2 in progress
    tr.observe(10.0, 0.5)  # before step 2: averaged into it
    tr.observe(180.0, 0.0)
    assert tr.loads == pytest.approx((0.1, 0.2, 0.4))


def test_readapts_every_n_samples_once_history_allows() -> None:
    fc = FakeForecaster()
    tr = ForecastTracker(fc, step=1.0, history=9, readapt_every=3)
    assert len(fc.calls) == 1 and fc.calls[0].size == 0  # meta-initialization, unadapted
    assert tr.shots == 0 and tr.adaptations == 0
    adapted_at = []
    for i in range(20):
        tr.observe(float(i), i / 100)
        if len(fc.calls) > 1 + len(adapted_at):
            adapted_at.append(tr.samples)
    # min_history = window + horizon = 7 closed steps; then every 3 new ones (history capped at 9)
    assert adapted_at[:3] == [7, 9, 9]
    assert tr.adaptations == len(adapted_at) == 5  # closed steps 7, 10, 13, 16, 19
    assert tr.shots == 1
    # adapted on the tracker's own history, in percent, oldest first, bounded
    np.testing.assert_allclose(fc.calls[-1], np.arange(10, 19) / 100 * PERCENT)


def test_readapts_after_a_gap() -> None:
    fc = FakeForecaster()
    tr = ForecastTracker(fc, step=1.0, readapt_every=12, min_history=4)
    feed(tr, [0.5] * 5, step=1.0)
    assert tr.adaptations == 1  # at 4 closed steps
    tr.observe(100.0, 0.5)  # 96 new (filled) steps: one adaptation, not many
    assert tr.adaptations == 2 and len(fc.calls) == 3


def test_forecast_units_clamping_and_caching() -> None:
    fc = FakeForecaster()
    tr = ForecastTracker(fc, step=60.0)
    assert tr.forecast() == (0.0,) * 4  # nothing observed yet
    feed(tr, [0.1, 0.5, 0.8, 0.75])  # three closed steps, the window
    # fake predicts last + 10, +20, ... percent, so 0.8 -> 0.9, 1.0, 1.1 (clamped), 1.2 (clamped)
    assert tr.forecast() == pytest.approx((0.9, 1.0, 1.0, 1.0))
    node = tr._node
    assert isinstance(node, FakeNode)
    np.testing.assert_allclose(node.seen[-1], [10.0, 50.0, 80.0])  # given in percent
    tr.forecast()
    assert len(node.seen) == 1  # cached until the next closed step
    tr2 = ForecastTracker(FakeForecaster(out=[-30.0, 50.0, 250.0, 5.0]), step=60.0)
    feed(tr2, [0.1] * 4)
    assert tr2.forecast() == pytest.approx((0.0, 0.5, 1.0, 0.05))


def test_predicted_peak_covers_steps() -> None:
    tr = ForecastTracker(FakeForecaster(out=[20.0, 60.0, 40.0, 90.0]), step=60.0)
    feed(tr, [0.1] * 4)
    assert tr.predicted_peak(0.0) == pytest.approx(0.2)  # at least one step
    assert tr.predicted_peak(-5.0) == pytest.approx(0.2)
    assert tr.predicted_peak(60.0) == pytest.approx(0.2)
    assert tr.predicted_peak(61.0) == pytest.approx(0.6)
    assert tr.predicted_peak(180.0) == pytest.approx(0.6)
    assert tr.predicted_peak(181.0) == pytest.approx(0.9)
    assert tr.predicted_peak(1e9) == pytest.approx(0.9)  # beyond the horizon
    assert tr.predicted_peak(float("inf")) == pytest.approx(0.9)
    with pytest.raises(ValueError):
        tr.predicted_peak(float("nan"))


def test_bad_arguments() -> None:
    fc = FakeForecaster()
    for kw in ({"step": 0.0}, {"step": float("nan")}, {"step": 1.0, "history": 2},
               {"step": 1.0, "readapt_every": 0}, {"step": 1.0, "min_history": 0},
               {"step": 1.0, "history": 10, "min_history": 11}):
        with pytest.raises(ValueError):
            ForecastTracker(fc, **kw)  # type: ignore[arg-type]
    tr = ForecastTracker(fc, step=1.0)
    with pytest.raises(ValueError):
        tr.observe(0.0, float("nan"))
    with pytest.raises(ValueError):
        tr.observe(float("inf"), 0.5)
    tr.observe(0.0, 7.0)  # out-of-range loads are clamped
    tr.observe(1.0, -1.0)
    assert tr.loads == (1.0,)


def test_last_value_ablation() -> None:
    tr = ForecastTracker(LastValueForecaster(horizon=6), step=300.0)
    feed(tr, [0.3, 0.4, 0.35], step=300.0)
    assert tr.forecast() == pytest.approx((0.4,) * 6)
    assert tr.predicted_peak(3600.0) == pytest.approx(0.4)


def test_real_numpy_forecaster_on_a_trace() -> None:
    fc = NumpyForecaster.load()
    cpu = load_bundle(SHIPPED_TRACES["gcd-vms"])[7]  # a real machine the model never trained on
    v = cpu.values[:100]
    tr = ForecastTracker(fc, step=300.0, history=64, readapt_every=12)
    for i, pct in enumerate(v):
        tr.observe(i * 300.0 + 17.0, pct / 100)  # two samples per step, averaged
        tr.observe(i * 300.0 + 150.0, pct / 100)
    closed = v[:-1]  # the last step is still in progress
    assert tr.samples == 64 and tr.loads == pytest.approx(tuple(closed[-64:] / 100))
    # adapted at 18 closed steps, then every 12: at 90 last, on the 64 newest of those
    assert tr.adaptations == 7 and tr.shots == fc.shots
    want = fc.adapt(closed[26:90]).forecast(closed[-fc.window:]) / 100
    assert tr.forecast() == pytest.approx(tuple(np.clip(want, 0, 1)), rel=1e-9)
    unadapted = fc.adapt([]).forecast(closed[-fc.window:]) / 100
    assert np.max(np.abs(np.asarray(tr.forecast()) - unadapted)) > 1e-6  # it did adapt
    assert not np.allclose(tr._node.params[0], fc.params[0])
    assert tr.predicted_peak(900.0) == pytest.approx(max(want[:3]))

"""ForecastTracker on the peak-forecaster interface: stepping, bounded history, re-adaptation
schedule, covering horizons, clamping, and forecasters that fail or fall back."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from agent.forecast_tracker import KINDS, ForecastTracker, check_forecaster, make_forecaster
from agent.placement_config import PlacementConfig
from metalearn.errors import ForecastError
from metalearn.peak_runtime import LastValuePeak
from metalearn.peaks import PeakForecast, PeakSpec

SPEC = PeakSpec(window=3, horizons=(1, 2, 4), quantiles=(0.5, 0.9), day=8, context=8)


class DoubleNode:
    """Peaks = last value + `rise` * (horizon index + 1) (+ 0.1 more at q0.9), unless told
    otherwise by `out` (quantile -> row) or `fail`."""

    def __init__(self, fc: DoubleForecaster, shots: int, fell_back: bool) -> None:
        self.fc, self.shots, self.fell_back = fc, shots, fell_back
        self.seen: list[np.ndarray] = []

    def forecast(self, history: np.ndarray) -> PeakForecast:
        h = np.asarray(history, dtype=float)
        self.seen.append(h)
        if h.size < self.fc.spec.window:
            raise ForecastError("too little history")
        if self.fc.forecast_fails:
            raise ForecastError("broken forecast")
        hs = self.fc.spec.horizons
        if self.fc.out is not None:
            peaks = {q: tuple(row) for q, row in self.fc.out.items()}
        else:
            base = [h[-1] + self.fc.rise * (i + 1) for i in range(len(hs))]
            peaks = {0.5: tuple(base), 0.9: tuple(x + 0.1 for x in base)}
        return PeakForecast(hs, tuple(h[-1] for _ in hs), tuple(h[-1] for _ in hs), peaks)


class DoubleForecaster:
    """A test double with the interface of metalearn.peak_runtime.PeakForecaster."""

    def __init__(self, spec: PeakSpec = SPEC, rise: float = 0.1,
                 out: dict[float, Sequence[float]] | None = None) -> None:  # fmt: skip
        self.spec = spec
        self.rise = rise
        self.out = out
        self.calls: list[np.ndarray] = []
        self.adapt_fails = False
        self.forecast_fails = False
        self.fell_back: Callable[[int], bool] = lambda _n: False

    def adapt(self, history: np.ndarray) -> DoubleNode:
        h = np.asarray(history, dtype=float)
        self.calls.append(h)
        if self.adapt_fails:
            raise ForecastError("cannot adapt")
        return DoubleNode(self, max(0, h.size - self.spec.window), self.fell_back(len(self.calls)))


def feed(tr: ForecastTracker, loads: Sequence[float], step: float = 60.0, t0: float = 0.0) -> None:
    for i, v in enumerate(loads):
        tr.observe(t0 + i * step, v)


def tracker(fc: DoubleForecaster | None = None, step: float = 60.0, **kw: object
            ) -> ForecastTracker:  # fmt: skip
    return ForecastTracker(fc or DoubleForecaster(), step=step, **kw)  # type: ignore[arg-type]


# ------------------------------------------------------------------ stepping and history


def test_samples_in_one_step_are_averaged() -> None:
    tr = tracker()
    tr.observe(1000.0, 0.2)
    tr.observe(1010.0, 0.4)
    tr.observe(1059.9, 0.6)
    assert tr.loads == ()  # the step in progress is not in the history
    assert tr.published() == pytest.approx((0.4,) * 3)  # before a window: the mean so far
    tr.observe(1060.0, 0.9)
    assert tr.loads == pytest.approx((0.4,))
    assert tr.peak(600.0) == pytest.approx(0.4)  # the last closed step
    tr.observe(1125.0, 0.1)
    assert tr.loads == pytest.approx((0.4, 0.9))


def test_gaps_repeat_the_last_value_and_history_is_bounded() -> None:
    tr = tracker(history=10)
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
    tr = tracker()
    feed(tr, [0.1, 0.2, 0.3])  # steps 0, 1 closed, 2 in progress
    tr.observe(10.0, 0.5)  # before step 2: averaged into it
    tr.observe(180.0, 0.0)
    assert tr.loads == pytest.approx((0.1, 0.2, 0.4))


def test_default_history_holds_two_days_and_the_longest_horizon() -> None:
    assert PlacementConfig().forecast_history == 2 * 288 + 96 == 672
    tr = ForecastTracker(LastValuePeak(), step=300.0)
    feed(tr, [0.5] * 800, step=300.0)
    assert tr.samples == 672


# ------------------------------------------------------------------ adaptation


def test_adapts_once_a_window_exists_then_every_n_steps_on_the_bounded_history() -> None:
    fc = DoubleForecaster()
    tr = tracker(fc, step=1.0, history=9, readapt_every=3)
    assert fc.calls == [] and tr.adaptations == 0 and tr.shots == 0
    adapted_at = []
    for i in range(20):
        tr.observe(float(i), i / 100)
        if len(fc.calls) > len(adapted_at):
            adapted_at.append(tr.samples)
    assert adapted_at[:3] == [3, 6, 9]  # window = 3 closed steps; then every 3 new ones
    assert tr.adaptations == len(adapted_at) == 6  # closed steps 3, 6, ..., 18
    assert tr.shots == 9 - SPEC.window
    # adapted on the tracker's own history, in fractions, oldest first, bounded
    np.testing.assert_allclose(fc.calls[-1], np.arange(9, 18) / 100)  # at 18 closed


def test_readapts_once_after_a_gap() -> None:
    fc = DoubleForecaster()
    tr = tracker(fc, step=1.0, readapt_every=12)
    feed(tr, [0.5] * 4, step=1.0)
    assert tr.adaptations == 1  # at 3 closed steps
    tr.observe(100.0, 0.5)  # 96 new (filled) steps: one adaptation, not many
    assert tr.adaptations == 2 and len(fc.calls) == 2


def test_fallbacks_of_the_forecaster_are_counted_and_its_forecast_used() -> None:
    fc = DoubleForecaster()
    fc.fell_back = lambda n: n % 2 == 1  # every other adaptation discarded by the forecaster
    tr = tracker(fc, step=1.0, readapt_every=2)
    feed(tr, [0.2] * 10, step=1.0)
    assert tr.adaptations == 4 and tr.fallbacks == 2 and tr.failures == 0
    assert tr.published() == pytest.approx((0.4, 0.5, 0.6))  # still the forecaster's


# ------------------------------------------------------------------ what it answers


def test_published_peaks_are_the_quantile_clamped_and_non_decreasing() -> None:
    tr = tracker(DoubleForecaster(rise=0.3))
    feed(tr, [0.1, 0.5, 0.8, 0.75])  # three closed steps: the window
    # q0.9 = last + 0.3 * (i + 1) + 0.1: 1.2, 1.5, 1.8, clamped to the node
    assert tr.published() == pytest.approx((1.0, 1.0, 1.0))
    assert tr.peak(60.0, 0.5) == pytest.approx(1.0)
    tr2 = tracker(DoubleForecaster(out={0.5: (-3.0, 0.2, 0.1), 0.9: (0.4, 0.3, 0.6)}))
    feed(tr2, [0.1] * 4)
    assert tr2.published() == pytest.approx((0.4, 0.4, 0.6))  # a decreasing row is raised
    assert tr2.peak(60.0, 0.5) == pytest.approx(0.0)  # negative: clamped
    assert tr2.failures == 0


def test_published_follows_the_configured_horizons_and_quantile() -> None:
    tr = tracker(horizons=(2, 4), quantile=0.5)
    feed(tr, [0.1, 0.2, 0.3, 0.4])
    assert tr.published() == pytest.approx((0.5, 0.6))  # last 0.3, + 0.2, + 0.3
    assert tr.peak(120.0) == pytest.approx(0.5)
    assert tr.peak(121.0, 0.9) == pytest.approx(0.7)


def test_peak_uses_the_covering_horizon() -> None:
    tr = tracker(DoubleForecaster(out={0.5: (0.1, 0.2, 0.3), 0.9: (0.2, 0.6, 0.9)}))
    feed(tr, [0.1] * 4)
    assert tr.peak(0.0) == pytest.approx(0.2)
    assert tr.peak(-5.0) == pytest.approx(0.2)
    assert tr.peak(60.0) == pytest.approx(0.2)  # 1 step covers 60 s
    assert tr.peak(61.0) == pytest.approx(0.6)  # 2 steps
    assert tr.peak(120.0) == pytest.approx(0.6)
    assert tr.peak(121.0) == pytest.approx(0.9)  # 4 steps
    assert tr.peak(1e9) == pytest.approx(0.9)  # beyond the longest: the longest
    assert tr.peak(math.inf) == pytest.approx(0.9)
    assert tr.peak(121.0, 0.5) == pytest.approx(0.3)
    with pytest.raises(ValueError):
        tr.peak(math.nan)
    with pytest.raises(ValueError, match="no quantile"):
        tr.peak(60.0, 0.75)


def test_before_a_window_the_last_value_or_the_mean_so_far() -> None:
    tr = tracker()
    assert tr.published() == (0.0, 0.0, 0.0) and tr.peak(1e6) == 0.0  # nothing observed
    tr.observe(0.0, 0.3)
    tr.observe(30.0, 0.5)
    assert tr.peak(60.0) == pytest.approx(0.4)
    feed(tr, [0.6, 0.7], t0=60.0)
    assert tr.published() == pytest.approx((0.6,) * 3)  # two closed steps, window 3


def test_forecast_is_cached_until_the_next_closed_step() -> None:
    tr = tracker()
    feed(tr, [0.1] * 4)
    node = tr._node
    assert isinstance(node, DoubleNode)
    tr.published()
    tr.peak(100.0)
    tr.peak(100.0, 0.5)
    assert len(node.seen) == 1
    np.testing.assert_allclose(node.seen[-1], [0.1, 0.1, 0.1])  # the whole history
    tr.observe(240.0, 0.2)
    tr.published()
    assert len(node.seen) == 2


# ------------------------------------------------------------------ forecasters that fail


def test_a_failing_adaptation_falls_back_to_the_last_value_and_is_counted() -> None:
    fc = DoubleForecaster()
    fc.adapt_fails = True
    tr = tracker(fc, step=1.0, readapt_every=2)
    feed(tr, [0.3, 0.4, 0.5, 0.6], step=1.0)
    assert tr.failures == 1 and tr.adaptations == 0
    assert tr.published() == pytest.approx((0.5,) * 3)
    fc.adapt_fails = False
    feed(tr, [0.6, 0.6], t0=4.0, step=1.0)  # the next due adaptation works
    assert tr.adaptations == 1 and tr.published() == pytest.approx((0.8, 0.9, 1.0))
    fc.adapt_fails = True
    feed(tr, [0.3, 0.3], t0=6.0, step=1.0)
    assert tr.failures == 2
    assert tr.published() == pytest.approx((0.5, 0.6, 0.7))  # the previous adaptation stays


@pytest.mark.parametrize("out", [
    {0.5: (0.1, 0.2, 0.3), 0.9: (0.1, math.nan, 0.3)},
    {0.5: (0.1, 0.2, 0.3), 0.9: (0.1, 0.2, math.inf)},
    {0.5: (0.1, 0.2, 0.3)},  # the quantile missing
    {0.5: (0.1, 0.2, 0.3), 0.9: (0.1, 0.2)},  # a horizon missing
    {0.5: (0.1, 0.2, 0.3), 0.9: ("x", 0.2, 0.3)},
])  # fmt: skip
def test_a_broken_forecast_falls_back_to_the_last_value_and_is_counted(out: dict) -> None:
    tr = tracker(DoubleForecaster(out=out))
    feed(tr, [0.2, 0.3, 0.4, 0.5])
    assert tr.published() == pytest.approx((0.4,) * 3)
    assert tr.peak(1e6) == pytest.approx(0.4)
    assert tr.failures == 1
    tr.published()
    assert tr.failures == 1  # once per closed step, not per question


def test_a_raising_forecast_falls_back_to_the_last_value() -> None:
    fc = DoubleForecaster()
    fc.forecast_fails = True
    tr = tracker(fc)
    feed(tr, [0.2, 0.3, 0.4, 0.5])
    assert tr.peak(60.0) == pytest.approx(0.4) and tr.failures == 1
    fc.forecast_fails = False
    tr.observe(240.0, 0.5)
    assert tr.peak(60.0) == pytest.approx(0.7) and tr.failures == 1


def test_absurd_forecasts_are_clamped_to_the_node() -> None:
    tr = tracker(DoubleForecaster(out={0.5: (-1e300, 0.0, 1e300), 0.9: (1e35, 1e300, 1e308)}))
    feed(tr, [0.2] * 4)
    assert tr.published() == (1.0, 1.0, 1.0) and tr.peak(1.0, 0.5) == 0.0
    assert tr.failures == 0


# ------------------------------------------------------------------ set-up


def test_check_forecaster_names_what_is_missing() -> None:
    fc = DoubleForecaster()
    check_forecaster(fc, (1, 4), 0.9)
    with pytest.raises(ValueError, match=r"horizons \[1, 2, 4\] \(steps\), not \[6\]"):
        check_forecaster(fc, (1, 6), 0.9)
    with pytest.raises(ValueError, match=r"quantiles \[0.5, 0.9\], not 0.95"):
        check_forecaster(fc, (1,), 0.95)
    with pytest.raises(ValueError, match="no peak spec"):
        check_forecaster(object(), (1,), 0.9)
    with pytest.raises(ValueError, match="horizons"):
        tracker(horizons=(3,))


def test_bad_arguments() -> None:
    for kw in ({"step": 0.0}, {"step": math.nan}, {"step": 1.0, "history": 2},
               {"step": 1.0, "readapt_every": 0}, {"step": 1.0, "quantile": 0.3}):
        with pytest.raises(ValueError):
            ForecastTracker(DoubleForecaster(), **kw)  # type: ignore[arg-type]
    tr = tracker(step=1.0)
    with pytest.raises(ValueError):
        tr.observe(0.0, math.nan)
    with pytest.raises(ValueError):
        tr.observe(math.inf, 0.5)
    tr.observe(0.0, 7.0)  # out-of-range loads are clamped
    tr.observe(1.0, -1.0)
    assert tr.loads == (1.0,)


def test_last_value_ablation() -> None:
    tr = ForecastTracker(LastValuePeak(), step=300.0)
    assert tr.horizons == (1, 6, 24, 96) and tr.quantile == 0.9
    feed(tr, [0.3] * 23 + [0.4, 0.35], step=300.0)
    assert tr.adaptations == 1
    assert tr.published() == pytest.approx((0.4,) * 4)
    assert tr.peak(3600.0) == pytest.approx(0.4)


def test_forecaster_kinds() -> None:
    assert KINDS == ("meta", "meta-init", "last-value", "none")
    assert make_forecaster("none") is None
    assert isinstance(make_forecaster("last-value"), LastValuePeak)
    with pytest.raises(ValueError, match="unknown forecaster 'oracle'"):
        make_forecaster("oracle")


def test_the_shipped_peak_forecaster_on_a_real_trace() -> None:
    from metalearn.data import load_bundle
    from metalearn.peak_runtime import PeakForecaster
    from scenarios.sim.background import SHIPPED_TRACES

    fc, init = make_forecaster("meta"), make_forecaster("meta-init")
    assert isinstance(fc, PeakForecaster) and isinstance(init, PeakForecaster)
    assert fc.adapts and not init.adapts
    cpu = load_bundle(SHIPPED_TRACES["gcd-vms"])[7].values / 100  # a machine it never saw
    tr, tr0 = ForecastTracker(fc, step=300.0), ForecastTracker(init, step=300.0)
    for i, v in enumerate(cpu):
        for t in (tr, tr0):
            t.observe(i * 300.0 + 17.0, v)  # two samples per step, averaged
            t.observe(i * 300.0 + 150.0, v)
    closed = cpu[:-1]  # the last step is still in progress
    assert tr.loads == pytest.approx(tuple(closed[-672:]))
    assert tr.adaptations >= 2 and tr.failures == 0 and tr.shots > 0 and tr0.shots == 0
    want = tr._node.forecast(np.asarray(tr.loads)).peaks[0.9]
    assert tr.published() == pytest.approx(tuple(np.maximum.accumulate(np.clip(want, 0, 1))))
    assert all(0.0 <= x <= 1.0 for x in tr.published())
    assert list(tr.published()) == sorted(tr.published())
    assert tr.published() != tr0.published()  # adaptation moved it
    assert tr.peak(3600.0, 0.5) <= tr.peak(3600.0, 0.9)

"""The peak forecaster: scale-free features, targets and masks, finite forecasts for any finite
input, guarded adaptation, the numpy runtime against learn2learn, and its file format."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metalearn.errors import CheckpointError, ForecastError
from metalearn.peak_runtime import (
    PARAM_NAMES,
    LastValuePeak,
    PeakForecaster,
    daily_autocorr,
    has_daily_cycle,
    loss_and_grads,
    support_grid,
    support_origins,
)
from metalearn.peaks import CLIP, PeakSpec, SeriesView

SPEC = PeakSpec(window=6, horizons=(1, 3, 8), quantiles=(0.5, 0.9), day=24, context=24)


def tiny(spec: PeakSpec = SPEC, hidden: int = 5, lr: float = 0.01, seed: int = 0,
         adapt: bool = True) -> PeakForecaster:
    rng = np.random.default_rng(seed)
    shapes = [(hidden, spec.n_features), (hidden,), (spec.n_outputs, hidden),
              (spec.n_outputs,), (spec.n_outputs, spec.n_features), (spec.n_outputs,)]
    params = [rng.normal(0, 0.3, s) for s in shapes]
    lrs = [np.full(s, lr) for s in shapes]
    return PeakForecaster(spec, params, lrs, inner_steps=2, shots=4, stride=2, adapt=adapt)


def daily(n: int, spec: PeakSpec = SPEC, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 40 + 20 * np.sin(2 * np.pi * t / spec.day) + rng.normal(0, 2, n)


# --- spec ------------------------------------------------------------------------------------

def test_spec_shapes_and_names():
    assert SPEC.n_features == 6 + 9 + 3
    assert SPEC.n_outputs == 3 * 4
    assert SPEC.output_names[:4] == ("point@1", "mean@1", "q50@1", "q90@1")
    assert list(SPEC.output_levels[:4]) == [0.0, 0.0, 0.5, 0.9]


@pytest.mark.parametrize("kw", [
    {"horizons": ()}, {"horizons": (3, 1)}, {"horizons": (0, 2)}, {"horizons": (1, 500)},
    {"quantiles": (0.9, 0.5)}, {"quantiles": (1.0,)}, {"window": 1}, {"context": 3},
])
def test_spec_rejects_bad_shapes(kw):
    with pytest.raises(ForecastError):
        PeakSpec(**{"window": 6, "day": 24, "context": 24, **kw})


# --- features and targets ----------------------------------------------------------------------

def test_targets_are_lead_value_mean_and_peak():
    v = np.arange(100, dtype=float) % 17
    view = SeriesView(v, SPEC)
    t = np.array([30, 50])
    y, m = view.targets(t)
    r, s = view.level_and_spread(t)
    got = y * s[:, None] + r[:, None]
    for row, origin in zip(got, t, strict=True):
        for i, h in enumerate(SPEC.horizons):
            point, mean, q50, q90 = row[4 * i:4 * i + 4] * view.unit
            assert point == pytest.approx(v[origin + h - 1])
            assert mean == pytest.approx(v[origin:origin + h].mean())
            assert q50 == q90 == pytest.approx(v[origin:origin + h].max())
    assert m.all()


def test_targets_beyond_what_is_known_are_masked():
    view = SeriesView(daily(60), SPEC)
    y, m = view.targets(np.array([55, 59]), known=58)
    per_h = m.reshape(2, 3, 4)[:, :, 0]
    assert per_h.tolist() == [[1, 1, 0], [0, 0, 0]]  # 55+1, 55+3 <= 58; 55+8 > 58
    assert (y[m == 0] == 0).all()


def test_seasonal_features_need_a_day():
    view = SeriesView(daily(80), SPEC)
    x, _, _ = view.features(np.array([10, 30]))
    season = slice(SPEC.window, SPEC.window + 9)
    assert (x[0, season] == 0).all() and x[0, -1] == 0.0
    assert x[1, -1] == 1.0 and np.abs(x[1, season]).sum() > 0


def test_seasonal_features_see_yesterday():
    v = daily(80)
    view = SeriesView(v, SPEC)
    t = 40
    x, r, s = view.features(np.array([t]))
    point_1 = x[0, SPEC.window] * s[0] + r[0]  # value one day before t, at lead 1
    assert point_1 * view.unit == pytest.approx(v[t - SPEC.day])


@given(st.floats(1e-200, 1e200), st.integers(0, 3))
@settings(max_examples=60, deadline=None)
def test_features_and_targets_are_scale_free(c, seed):
    v = daily(90, seed=seed)
    t = np.arange(SPEC.window, 82)
    a, b = SeriesView(v, SPEC), SeriesView(v * c, SPEC)
    np.testing.assert_allclose(a.features(t)[0], b.features(t)[0], atol=1e-8)
    np.testing.assert_allclose(a.targets(t)[0], b.targets(t)[0], atol=1e-8)


def test_non_finite_series_is_refused():
    with pytest.raises(ForecastError, match="NaN or infinite"):
        SeriesView(np.array([1.0, np.nan, 2.0]), SPEC)


# --- any finite input gives a finite, bounded forecast -----------------------------------------

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@given(st.lists(finite, min_size=SPEC.window, max_size=70))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_finite_history_gives_a_finite_forecast(values):
    fc = tiny()
    node = fc.adapt(values)
    f = node.forecast(values)
    top = max(abs(x) for x in values)
    for row in (f.point, f.mean, *f.peaks.values()):
        assert all(math.isfinite(x) for x in row)
        # bounded: within CLIP spreads of the recent level (spread <= the values' magnitude)
        assert all(abs(x) <= (1 + 2 * CLIP) * top + 1e-9 for x in row)
    for lo, hi in zip(f.peaks[0.5], f.peaks[0.9], strict=True):
        assert lo <= hi
    assert list(f.peaks[0.9]) == sorted(f.peaks[0.9])


def test_large_valued_series_forecast_at_its_scale():
    """The old mean-path forecaster gave 1e35 for a window of values around 1e6."""
    v = daily(80) * 1e6
    f = tiny().adapt(v).forecast(v)
    assert all(0 < x < 1e9 for x in f.point)


def test_too_short_history():
    fc = tiny()
    node = fc.adapt([1.0, 2.0])  # too short to adapt: the initialization
    assert node.shots == 0 and not node.fell_back
    with pytest.raises(ForecastError, match="needs the last 6"):
        node.forecast([1.0, 2.0])


def test_bad_history_values():
    with pytest.raises(ForecastError):
        tiny().adapt([1.0, float("inf")] * 10)
    with pytest.raises(ForecastError, match="numbers"):
        tiny().adapt(["a"] * 10)


# --- adaptation ------------------------------------------------------------------------------

def test_support_origins_are_strided_and_have_a_window():
    assert support_origins(30, SPEC, 4, 3).tolist() == [29, 26, 23, 20]
    assert support_origins(12, SPEC, 4, 3).tolist() == [11, 8]


def test_support_reaches_a_day_back_once_the_history_holds_one():
    w, day = SPEC.window, SPEC.day
    n = w + day + 1  # the oldest origin a day back has a full window
    assert support_origins(n, SPEC, 5, 4, near_stride=2).tolist() == \
        [n - 1, n - 3, n - 5, n - 1 - day, n + 1 - day]
    assert support_origins(n - 1, SPEC, 5, 4, near_stride=2).tolist() == \
        support_origins(n - 1, SPEC, 5, 4).tolist()  # one step short: strided
    assert support_origins(n, SPEC, 5, 4, near_stride=0).tolist() == \
        support_origins(n, SPEC, 5, 4).tolist()
    lengths = np.arange(1, 3 * day)
    grid, valid = support_grid(lengths, SPEC, 7, 4, 2)
    for n_, row, ok in zip(lengths, grid, valid, strict=True):
        assert row[ok].tolist() == support_origins(int(n_), SPEC, 7, 4, 2).tolist()
        assert (row[ok] >= w).all() and (row[ok] < n_).all()


def test_day_back_support_sees_every_horizon_of_the_day_before():
    v = daily(3 * SPEC.day)
    o = support_origins(len(v), SPEC, 4, 2, near_stride=2)
    _, m = SeriesView(v, SPEC).targets(o, known=len(v))
    assert m[2:].all()  # the two origins a day back: every output is known


def test_support_reaches_a_day_back_only_on_a_daily_cycle():
    n = 3 * SPEC.day
    day_back = support_origins(n, SPEC, 4, 2, near_stride=2, daily=True)
    recent = support_origins(n, SPEC, 4, 2, near_stride=2, daily=False)
    assert recent.tolist() == support_origins(n, SPEC, 4, 2).tolist()
    assert day_back.min() < n - SPEC.day < recent.min()
    grid, _ = support_grid(np.array([n, n]), SPEC, 4, 2, 2, np.array([True, False]))
    assert grid.tolist() == [day_back.tolist(), recent.tolist()]

    def adapted(v: np.ndarray, near_stride: int) -> list[np.ndarray]:
        fc = tiny(lr=0.05)
        fc.near_stride = near_stride
        return fc.adapt(v).params

    noise = np.random.default_rng(3).normal(40, 5, n)  # a day of history, no daily cycle
    for p, q in zip(adapted(noise, 2), adapted(noise, 0), strict=True):
        np.testing.assert_array_equal(p, q)
    cycle = daily(n)
    assert any(not np.array_equal(p, q)
               for p, q in zip(adapted(cycle, 2), adapted(cycle, 0), strict=True))


def test_daily_cycle_test_is_total_on_any_finite_history():
    assert not has_daily_cycle(np.full(3 * SPEC.day, 7.0), SPEC.day)  # constant
    assert not has_daily_cycle(np.arange(10.0), SPEC.day)  # shorter than a day
    assert not has_daily_cycle(np.zeros(3 * SPEC.day), SPEC.day)
    huge = np.random.default_rng(1).uniform(-1.0, 1.0, 3 * SPEC.day) * 1.7e308  # squares overflow
    assert np.isfinite(daily_autocorr(huge, SPEC.day)) and not has_daily_cycle(huge, SPEC.day)
    assert has_daily_cycle(daily(3 * SPEC.day) * 1e300, SPEC.day)  # scale-free


def test_adaptation_lowers_the_support_loss():
    fc = tiny(lr=0.05)
    v = daily(80)
    node = fc.adapt(v)
    assert node.shots == 4 and not node.fell_back
    view = SeriesView(v, SPEC)
    o = support_origins(len(v), SPEC, 4, 2)
    x, _, _ = view.features(o)
    y, m = view.targets(o, known=len(v))
    before, _ = loss_and_grads(fc.params, x, y, m, SPEC.output_levels)
    after, _ = loss_and_grads(node.params, x, y, m, SPEC.output_levels)
    assert after < before


def test_divergent_adaptation_falls_back_to_the_init():
    fc = tiny(lr=1e6)
    node = fc.adapt(daily(80))
    assert node.fell_back and node.shots == 0
    assert all(p is q for p, q in zip(node.params, fc.params, strict=True))


def test_unadapted_variant_never_adapts():
    fc = tiny(adapt=False)
    node = fc.adapt(daily(80))
    assert node.shots == 0 and node.params is fc.params and fc.name == "meta-init"


def test_gradients_match_finite_differences():
    fc = tiny()
    view = SeriesView(daily(80), SPEC)
    o = np.arange(30, 60, 3)
    x, _, _ = view.features(o)
    y, m = view.targets(o, known=62)
    _, grads = loss_and_grads(fc.params, x, y, m, SPEC.output_levels)
    rng = np.random.default_rng(1)
    for k, p in enumerate(fc.params):
        idx = tuple(rng.integers(0, n) for n in p.shape)
        eps = 1e-6
        plus = [q.copy() for q in fc.params]
        minus = [q.copy() for q in fc.params]
        plus[k][idx] += eps
        minus[k][idx] -= eps
        fd = (loss_and_grads(plus, x, y, m, SPEC.output_levels)[0]
              - loss_and_grads(minus, x, y, m, SPEC.output_levels)[0]) / (2 * eps)
        assert grads[k][idx] == pytest.approx(fd, rel=1e-4, abs=1e-7)


def test_numpy_adaptation_matches_learn2learn():
    torch = pytest.importorskip("torch")
    l2l = pytest.importorskip("learn2learn")
    from metalearn.peak_train import PeakNet, masked_loss

    torch.manual_seed(0)
    net = PeakNet(SPEC, 5).double()
    maml = l2l.algorithms.MetaSGD(net, lr=0.03, first_order=True)
    named = dict(net.named_parameters())
    params = [named[n].detach().numpy().copy() for n in PARAM_NAMES]
    lrs = [dict(zip(PARAM_NAMES, maml.lrs, strict=True))[n].detach().numpy().copy()
           for n in PARAM_NAMES]
    fc = PeakForecaster(SPEC, params, lrs, inner_steps=3, shots=4, stride=2)
    v = daily(80)
    node = fc.adapt(v)

    view = SeriesView(v, SPEC)
    o = support_origins(len(v), SPEC, 4, 2)
    x, _, _ = view.features(o)
    y, m = view.targets(o, known=len(v))
    lv = torch.from_numpy(SPEC.output_levels)
    learner = maml.clone()
    for _ in range(3):
        learner.adapt(masked_loss(learner(torch.from_numpy(x)), torch.from_numpy(y),
                                  torch.from_numpy(m), lv))
    adapted = dict(learner.module.named_parameters())
    for n, p in zip(PARAM_NAMES, node.params, strict=True):
        np.testing.assert_allclose(p, adapted[n].detach().numpy(), rtol=1e-9, atol=1e-12)


# --- last value and the file -----------------------------------------------------------------

def test_last_value_ablation():
    f = LastValuePeak(SPEC).adapt([1.0, 5.0]).forecast([1.0, 5.0])
    assert f.point == f.mean == f.peaks[0.9] == (5.0, 5.0, 5.0)
    assert f.peak(0.9, 100) == 5.0


def test_peak_picks_the_covering_horizon():
    f = tiny().adapt(daily(80)).forecast(daily(80))
    assert f.peak(0.9, 1) == f.peaks[0.9][0]
    assert f.peak(0.9, 2) == f.peaks[0.9][1]
    assert f.peak(0.9, 8) == f.peaks[0.9][2]
    assert f.peak(0.9, 1000) == f.peaks[0.9][2]


def test_offsets_follow_the_history_regime():
    """Origins without a day of history get row 0 of the offsets, those with one row 1."""
    from metalearn.peak_runtime import forward

    fc = tiny()
    fc.offsets = np.vstack([np.full(SPEC.n_outputs, -1.0), np.full(SPEC.n_outputs, 2.0)])
    v = daily(3 * SPEC.day)
    view = SeriesView(v, SPEC)
    node = fc.init_node()
    origins = np.array([SPEC.window, SPEC.day - 1, SPEC.day, 2 * SPEC.day])
    x, _, _ = view.features(origins)
    got = node.outputs(view, origins) - forward(fc.params, x)
    np.testing.assert_allclose(got, [[-1.0] * SPEC.n_outputs] * 2 + [[2.0] * SPEC.n_outputs] * 2)
    short, long = v[:SPEC.day - 1], v[:2 * SPEC.day]
    shifted = [node.forecast(h).point for h in (short, long)]
    fc.offsets = np.zeros_like(fc.offsets)
    plain = [node.forecast(h).point for h in (short, long)]
    assert max(np.subtract(shifted[0], plain[0])) < 0 < min(np.subtract(shifted[1], plain[1]))


def test_calibration_covers_each_quantile_in_each_regime():
    """Offsets fitted per regime make every peak quantile cover its level on the origins they
    were fitted on, separately with and without a day of history, where errors differ."""
    from metalearn.data import Series, series_digest
    from metalearn.peak_train import PeakTrainConfig, calibration_residuals, fit_offsets

    cfg = PeakTrainConfig(spec=SPEC, shots=4, stride=2, history=4 * SPEC.day, readapt_every=6)
    rng = np.random.default_rng(3)
    train = []
    for i in range(60):  # noisier after the first day: the regimes' errors differ
        v = daily(5 * SPEC.day, seed=i)
        v[SPEC.day:] += rng.normal(0, 8, v.size - SPEC.day)
        train.append(Series(f"m{i}", v, series_digest(v)))
    r, m, g = calibration_residuals(tiny(), train, cfg, machines=len(train))
    assert set(g.tolist()) == {0, 1} and len(r) == len(m) == len(g)
    offsets = fit_offsets(r, m, g, SPEC)
    assert offsets.shape == (2, SPEC.n_outputs)
    for j in np.flatnonzero(SPEC.output_levels > 0):
        for k in (0, 1):
            sel = (g == k) & m[:, j]
            covered = r[sel, j] <= offsets[k, j] + 1e-12  # within one sample of the level
            assert abs(covered.mean() - SPEC.output_levels[j]) <= 1.0 / sel.sum() + 1e-9
    assert np.abs(offsets[0] - offsets[1]).max() > 0.1
    assert not offsets[:, SPEC.output_levels <= 0].any()  # point and mean: no offset


def test_shipped_file_loads_and_forecasts():
    fc = PeakForecaster.load()
    v = daily(700, fc.spec)
    f = fc.adapt(v).forecast(v)
    assert len(f.point) == len(fc.spec.horizons)
    assert PeakForecaster.load(adapt=False).name == "meta-init"


def test_file_errors(tmp_path):
    from metalearn.npz_file import read_npz, write_npz
    from metalearn.peak_runtime import DEFAULT_PATH, FORMAT, VERSION

    with pytest.raises(CheckpointError, match="no such forecaster file"):
        PeakForecaster.load(tmp_path / "missing.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a forecaster export"):
        PeakForecaster.load(bad)
    arrays = {k: v for k, v in read_npz(DEFAULT_PATH, FORMAT, VERSION).items()
              if k not in ("format", "version", "hash")}
    arrays["param.skip.bias"] = arrays["param.skip.bias"][:-1]
    write_npz(arrays, tmp_path / "edited.npz", fmt=FORMAT, version=VERSION)
    with pytest.raises(CheckpointError, match="param.skip.bias"):
        PeakForecaster.load(tmp_path / "edited.npz")
    write_npz(arrays, tmp_path / "old.npz", fmt=FORMAT, version=VERSION + 1)
    with pytest.raises(CheckpointError, match="version"):
        PeakForecaster.load(tmp_path / "old.npz")


def test_latency_bench_runs_on_the_shipped_bundle(tmp_path):
    """`metalearn.bench` (a `make bench` figure) runs and reports what it measured."""
    from metalearn import bench
    from metalearn.data import load_bundle

    d = tmp_path / "vms"
    d.mkdir()
    bundle = Path(__file__).resolve().parents[1] / "scenarios/traces/bitbrains-rnd.tsv.gz"
    for s in load_bundle(bundle)[:5]:
        (d / s.name).write_text("\n".join(f"{v} 0" for v in s.values))
    out = bench.run(d, nodes=5)
    assert out["nodes"] == 5 and out["history"] == bench.HISTORY and out["shots"] == 10
    assert out["adapt_forecast_median_ms"] > 0

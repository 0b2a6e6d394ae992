"""Peak forecaster evaluation (issue 11): baselines on series with known answers, the scoring,
the batched walk-forward against the runtime's own adapt/predict, groups, skips, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metalearn import peak_baselines as pb
from metalearn import peak_eval as pe
from metalearn.data import Series, load_bundle, series_digest
from metalearn.errors import DataError
from metalearn.peak_runtime import PeakForecaster
from metalearn.peaks import PeakSpec, SeriesView

ROOT = Path(__file__).resolve().parents[1]
TRACES = ROOT / "scenarios" / "traces"
SPEC = PeakSpec()
DAY = SPEC.day


def tiny(seed: int = 0, scale: float = 0.1, lr: float = 0.01, hidden: int = 4,
         shots: int = 10, stride: int = 12, steps: int = 2, adapt: bool = True,
         near_stride: int = 3) -> PeakForecaster:
    """A small random peak forecaster (no trained file needed)."""
    rng = np.random.default_rng(seed)
    f, o = SPEC.n_features, SPEC.n_outputs
    shapes = [(hidden, f), (hidden,), (o, hidden), (o,), (o, f), (o,)]
    params = [rng.normal(0.0, scale, s) for s in shapes]
    return PeakForecaster(SPEC, params, [np.full(s, lr) for s in shapes], steps, shots,
                          stride, adapt=adapt, near_stride=near_stride)


def zero_net() -> PeakForecaster:
    """All weights zero: every output is the recent level (exact on a constant series)."""
    return tiny(scale=0.0)


def series(name: str, values: np.ndarray) -> Series:
    v = np.asarray(values, dtype=np.float64)
    return Series(name, v, series_digest(v))


def sine(days: float, phase: float = 0.0, level: float = 50.0, amp: float = 20.0
         ) -> np.ndarray:
    t = np.arange(int(days * DAY))
    return level + amp * np.sin(2 * np.pi * t / DAY + phase)


@pytest.fixture(scope="module")
def bundles() -> dict[str, list[Series]]:
    return {"gcd-vms": load_bundle(TRACES / "gcd-vms.tsv.gz"),
            "bitbrains-rnd": load_bundle(TRACES / "bitbrains-rnd.tsv.gz")}


def cols(kind: int) -> list[int]:
    """Output columns of one kind (0 point, 1 mean, 2.. quantiles) at every horizon."""
    k = SPEC.outputs_per_horizon
    return [i * k + kind for i in range(len(SPEC.horizons))]


# --- baselines ------------------------------------------------------------------------------

def test_seasonal_naive_is_exact_on_a_daily_sine_and_counts_its_fallbacks() -> None:
    v = sine(3)
    t = np.arange(100, len(v))
    pred, back = pb.seasonal_naive(v, t, SPEC)
    tgt, mask = pe.truth(v, t, SPEC)
    assert back.sum() == DAY - 100 and not back[t >= DAY].any()
    ok = mask & (t >= DAY)[:, None]
    np.testing.assert_allclose(pred[ok], tgt[ok], atol=1e-9)
    np.testing.assert_array_equal(pred[back], np.repeat(v[t[back] - 1][:, None], 16, axis=1))


def test_constant_series_every_method_exact_and_covered() -> None:
    c = 37.5
    v = np.full(3 * DAY, c)
    t = np.arange(pe.default_t0(len(v), SPEC), len(v))
    train = [series(f"const_{i}", np.full(3 * DAY, 10.0 + i)) for i in range(3)]
    ma = pb.MovingAverage.fit(train, SPEC)
    ar = pb.LinearAR.fit(train, SPEC)
    tgt, mask = pe.truth(v, t, SPEC)
    preds = [pb.last_value(v, t, SPEC), pb.seasonal_naive(v, t, SPEC)[0], ma.predict(v, t),
             ar.predict(v, t), pb.recent_quantile(v, t, SPEC)]
    for fc in (zero_net(), pe.unadapted(zero_net())):
        for k in (0, 10):
            preds.append(pe.walk_forward(fc, v, int(t[0]), k, 12, 672)[0])
    for p in preds:
        st = pe.machine_stats(p, tgt, mask, SPEC)
        point_mean = sorted(cols(0) + cols(1))
        assert np.all(st[0, point_mean] < 1e-18)  # squared errors: exact
        assert np.all(st[2] == st[3])  # every true peak <= its forecast: coverage 1


def test_moving_average_widths_fit_on_training_machines() -> None:
    rng = np.random.default_rng(3)
    walks = [series(f"walk_{i}", 100 + np.cumsum(rng.normal(size=2000))) for i in range(4)]
    noise = [series(f"noise_{i}", 50 + rng.normal(size=2000)) for i in range(4)]
    w_walk = pb.MovingAverage.fit(walks, SPEC).widths
    w_noise = pb.MovingAverage.fit(noise, SPEC).widths
    assert w_walk[0] == 1  # random walk: the last value is the best point@1
    assert all(w_noise[c] == max(pb.MA_WIDTHS) for c in cols(0) + cols(1))  # iid: widest
    assert all(w_walk[c] == 1 for c in cols(2) + cols(3))  # peaks: not defined (last value)
    v = noise[0].values
    t = np.arange(200, 300)
    got = pb.MovingAverage(SPEC, w_noise).predict(v, t)
    m = max(pb.MA_WIDTHS)
    np.testing.assert_allclose(got[:, 0], [v[a - m:a].mean() for a in t])
    np.testing.assert_array_equal(got[:, 2], v[t - 1])


def test_linear_ar_learns_a_daily_sine_from_the_seasonal_features() -> None:
    train = [series(f"s{i}", sine(4, phase=i, level=40 + 5 * i, amp=10 + i)) for i in range(5)]
    ar = pb.LinearAR.fit(train, SPEC)
    assert ar.coef.shape == (SPEC.n_features + 1, 2 * len(SPEC.horizons))
    v = 3.0 * sine(3, phase=0.7)  # another phase, another unit: features are scale-free
    t = np.arange(2 * DAY, len(v))
    tgt, mask = pe.truth(v, t, SPEC)
    pred = ar.predict(v, t)
    err = np.abs(pred - tgt)[:, cols(0) + cols(1)][mask[:, cols(0) + cols(1)]]
    assert err.max() < 0.05 * 3.0 * 20.0
    np.testing.assert_array_equal(pred[:, cols(2)], np.repeat(v[t - 1][:, None], 4, axis=1))


def test_recent_quantile_is_the_quantile_of_window_peaks() -> None:
    rng = np.random.default_rng(5)
    v = rng.gamma(2.0, size=700)
    t = np.array([30, 97, 100, 250, 288, 289, 500, 699])
    got = pb.recent_quantile(v, t, SPEC)
    for i, tt in enumerate(t):
        for j, h in enumerate(SPEC.horizons):
            lo = max(0, tt - SPEC.context)
            peaks = [v[a:a + h].max() for a in range(lo, tt - h + 1)]
            want = np.quantile(peaks, SPEC.quantiles) if peaks else [v[tt - 1]] * 2
            k = j * SPEC.outputs_per_horizon
            np.testing.assert_allclose(got[i, k + 2:k + 4], want, rtol=1e-12)
            assert got[i, k] == got[i, k + 1] == v[tt - 1]


# --- scoring --------------------------------------------------------------------------------

def test_truth_masks_every_target_beyond_the_series() -> None:
    v = np.arange(1.0, 201.0)
    t = np.arange(90, 200)
    tgt, mask = pe.truth(v, t, SPEC)
    for j, h in enumerate(SPEC.horizons):
        k = j * SPEC.outputs_per_horizon
        ok = t + h <= len(v)
        np.testing.assert_array_equal(mask[:, k:k + 4], np.repeat(ok[:, None], 4, axis=1))
        np.testing.assert_array_equal(tgt[ok, k], v[t[ok] + h - 1])
        np.testing.assert_allclose(tgt[ok, k + 1], [v[a:a + h].mean() for a in t[ok]])
        np.testing.assert_array_equal(tgt[ok, k + 2], v[t[ok] + h - 1])  # rising: peak = end
    assert mask[:, cols(0)[-1]].sum() == 200 - 96 - 90 + 1
    # a forecast wrong only where the target is unknown scores perfectly
    pred = np.where(mask, tgt, 1e9)
    st = pe.machine_stats(pred, tgt, mask, SPEC)
    assert np.all(st[0] == 0) and np.all(st[1] == 0) and np.all(st[2] == st[3])
    np.testing.assert_array_equal(st[3], mask.sum(0))


def test_coverage_and_pinball_on_hand_made_numbers() -> None:
    spec = PeakSpec(horizons=(1,), quantiles=(0.9,))
    target = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 2.0], [0.0, 0.0, 3.0], [0.0, 0.0, 4.0]])
    pred = np.array([[1.0, 0.0, 1.5], [2.0, 0.0, 1.5], [0.0, 0.0, 3.0], [0.0, 0.0, 9.0]])
    mask = np.ones_like(target, dtype=bool)
    mask[3] = False
    st = pe.machine_stats(pred, target, mask, spec)
    assert st[3].tolist() == [3, 3, 3]
    assert st[2, 2] == 2  # 1 <= 1.5 and 3 <= 3 covered; 2 > 1.5 not; row 3 masked out
    assert st[0, 0] == 1 + 4  # squared errors of the point column
    # pinball at 0.9: over-forecast 0.5 costs 0.1 * 0.5, under-forecast 0.5 costs 0.9 * 0.5
    assert st[1, 2] == pytest.approx(0.05 + 0.45 + 0.0)
    base = pe.machine_stats(np.zeros_like(pred), target, mask, spec)
    s = pe._aggregate((pe.META, 10), st[None], base[None], spec, None)
    assert s.coverage[0.9][1] == pytest.approx(2 / 3)
    assert s.pinball[0.9][1] == pytest.approx(0.5 / 3)
    assert s.rmse_point[1] == pytest.approx(np.sqrt(5 / 3))
    assert np.isnan(s.skill[1])  # the reference's RMSE is 0 here: skill undefined


def test_daily_cycle_split() -> None:
    rng = np.random.default_rng(1)
    assert pe.has_daily_cycle(sine(3) + rng.normal(size=3 * DAY), DAY)
    assert not pe.has_daily_cycle(rng.normal(size=3 * DAY), DAY)
    assert not pe.has_daily_cycle(np.full(3 * DAY, 4.0), DAY)  # constant: undefined
    assert np.isnan(pe.daily_autocorr(np.arange(DAY + 1.0), DAY))  # too short
    assert pe.daily_autocorr(sine(3), DAY) == pytest.approx(1.0)


# --- the networks: batched walk-forward equals the runtime ---------------------------------

def _reference(fc: PeakForecaster, v: np.ndarray, t0: int, k: int, block: int,
               history: int) -> tuple[np.ndarray, list[bool]]:
    view = SeriesView(v, SPEC)
    out, fell = [], []
    for b0 in range(t0, len(v), block):
        node = fc.adapt(v[max(0, b0 - history):b0], shots=k)
        out.append(node.predict(view, np.arange(b0, min(len(v), b0 + block))))
        fell.append(node.fell_back)
    return np.concatenate(out), fell


@pytest.mark.parametrize("k,history,lr,near,vm", [
    (10, 672, 0.01, 3, 0), (3, 672, 0.05, 3, 0), (20, 300, 0.01, 3, 0), (10, 672, 50.0, 3, 0),
    (10, 672, 0.01, 0, 0),  # never reaching a day back
    (10, 330, 0.01, 3, 0),  # the day-back origins' own features reach before a cut history
    (10, 672, 0.01, 3, 3),  # a daily cycle in some blocks' histories only
])
def test_batched_walk_forward_equals_adapt_and_predict(bundles, k, history, lr, near, vm
                                                       ) -> None:
    v = bundles["bitbrains-rnd"][vm].values[:1300] + 0.0
    fc = tiny(seed=2, scale=0.3, lr=lr, near_stride=near)
    fc.offsets = np.random.default_rng(0).normal(0.0, 0.5, (2, SPEC.n_outputs))  # calibration
    got, fell = pe.walk_forward(fc, v, 576, k, 12, history)
    want, want_fell = _reference(fc, v, 576, k, 12, history)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(v).max())
    assert fell.tolist() == want_fell
    if lr == 50.0:
        assert fell.any()  # huge rates: some adaptations are thrown away, as in adapt()


def test_walk_forward_on_a_short_series_and_unadapted(bundles) -> None:
    v = bundles["gcd-vms"][0].values
    for fc, k in ((tiny(seed=4), 10), (tiny(seed=4, adapt=False), 10), (tiny(seed=4), 0)):
        got, _ = pe.walk_forward(fc, v, 144, k, 12, 672)
        want, _ = _reference(fc, v, 144, k, 12, 672)
        assert got.shape == (len(v) - 144, SPEC.n_outputs)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9 * np.abs(v).max())


# --- evaluate: protocol, groups, skips, errors, report --------------------------------------

def _split(b: dict[str, list[Series]]) -> tuple[dict, dict]:
    train = {n: s[:4] for n, s in b.items()}
    held = {n: s[4:] for n, s in b.items()}
    return train, held


def test_evaluate_on_the_shipped_bundles(bundles) -> None:
    train, held = _split(bundles)
    calls = []
    res = pe.evaluate(tiny(seed=1), held, train, joint=tiny(seed=9), limit=4, lr_machines=2,
                      progress=lambda stage, d, n: calls.append((stage, d, n)))
    assert ("gcd-vms", 4, 4) in calls and ("joint lr", 5, 5) in calls
    assert res.joint_lr in pe.LR_GRID and set(res.joint_lr_scores) == set(pe.LR_GRID)
    names = [g.name for g in res.groups]
    assert names[:2] == ["gcd-vms", "bitbrains-rnd"]  # gcd: one day only, never split
    bb = res.group("bitbrains-rnd")
    split = [g for g in res.groups if g.dataset == "bitbrains-rnd" and g is not bb]
    assert sorted(m for g in split for m in g.machines) == sorted(bb.machines)
    assert [g.daily for g in split] == [True, False] or len(split) == 1
    for g in split:
        daily = bool(g.daily)
        assert g.seasonal_fallback == (0, sum(len(s.values) - 576 for s in held["bitbrains-rnd"]
                                              if s.name in g.machines))
        assert all(pe.has_daily_cycle(next(s.values for s in held["bitbrains-rnd"]
                                           if s.name == m), DAY) == daily for m in g.machines)
    g = res.group("gcd-vms")
    assert g.seasonal_fallback == (4 * 144, 4 * 144)  # one-day series: never a day back
    assert [r.label for r in g.rows][:6] == [*pe.BASELINES, pe.INIT]
    assert {r.label for r in g.rows} >= {"meta-learned k=5", "joint k=0", "joint k=20"}
    assert g.row(pb.LAST).skill[1] == 0.0
    assert g.row(pe.META, 10).fell_back[1] == 4 * 12 and g.row(pe.INIT).fell_back is None
    assert all(np.isfinite(r.rmse_point[h]) for r in g.rows for h in SPEC.horizons)
    md = pe.format_markdown(res)
    assert md.count("| method | 5 min | 30 min | 2 h | 8 h |") == 4 * len(res.groups)
    peak_rows = md.split("Peak q90")[1].split("###")[0]
    assert "moving average" not in peak_rows and "linear AR" not in peak_rows
    assert "recent quantile" in peak_rows
    assert "### Targets" in md and "MISSED" in md


def test_target_check_reads_met_only_when_met(bundles) -> None:
    train, held = _split(bundles)
    res = pe.evaluate(tiny(seed=1), held, train, joint=tiny(seed=9), shots=(0, 10), limit=3,
                      lr_machines=1)
    g = res.group("gcd-vms")
    row = g.row(pe.META, 10)
    row.skill = {h: 0.2 for h in SPEC.horizons}
    line = next(c for c in pe.target_check(res) if "skill" in c)
    assert ": met (" in line
    row.skill[96] = 0.149
    line = next(c for c in pe.target_check(res) if "skill" in c)
    assert "MISSED at 8 h" in line


def test_short_series_are_skipped_and_counted() -> None:
    rng = np.random.default_rng(0)
    long_ = [series(f"m{i}", 50 + rng.normal(size=400)) for i in range(3)]
    short = [series("s0", np.ones(144)), series("s1", np.ones(100))]
    train = {"x": [series(f"t{i}", 50 + rng.normal(size=400)) for i in range(3)]}
    res = pe.evaluate(zero_net(), {"x": long_ + short}, train, lr_machines=1)
    assert res.skipped == {"x": 2} and res.considered == {"x": 5}
    assert res.group("x").machines == ["m0", "m1", "m2"]
    assert "2 too short (skipped)" in pe.format_markdown(res)
    assert not any(r.method == pe.JOINT for r in res.group("x").rows)  # no joint given


def test_no_usable_machine_is_a_data_error() -> None:
    train = {"x": [series("t", np.ones(400))]}
    with pytest.raises(DataError, match=r"^x: no usable machine \(2 series") as e:
        pe.evaluate(zero_net(), {"x": [series("a", np.ones(144)), series("b", np.ones(9))]},
                    train)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="no training machines"):
        pe.evaluate(zero_net(), {"x": [series("a", np.ones(400))]}, {"y": train["x"]})


def test_a_runtime_that_adapts_differently_is_caught_and_followed(bundles) -> None:
    class Other(PeakForecaster):  # e.g. the runtime's loss changed: batched copy now stale
        def adapt(self, history, shots=None):  # type: ignore[override]
            return self.init_node()

    base = tiny(seed=3)
    fc = Other(SPEC, base.params, base.lrs, 2, 10, 12)
    mc = pe.Machine.of(bundles["bitbrains-rnd"][1].values[:1000], SPEC)
    guard = pe._Guard()
    got, _ = guard.run(fc, ("other", 10), mc, 576, 10, 12, 672)
    assert guard.exact == {("other", 10)}
    np.testing.assert_allclose(got, pe.walk_forward(base, mc, 576, 0, 12, 672)[0])
    guard.run(base, ("base", 10), mc, 576, 10, 12, 672)
    assert ("base", 10) not in guard.exact

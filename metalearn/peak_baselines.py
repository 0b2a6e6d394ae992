"""Baselines for the peak forecaster, in the layout of :meth:`PeakNode.predict` (numpy only).

Every baseline forecasts at many origins ``t`` of one series (values ``v[:t]`` known) and
returns an array (n_origins, spec.n_outputs) in the series' units, per horizon in the order of
:attr:`PeakSpec.output_names`: point, mean, then each quantile of the peak. An output a
baseline does not define is the last value; :data:`DEFINED` says which ones each defines.

* last value: every output is ``v[t-1]`` (the reference of the skill scores);
* seasonal naive: the same stretch one day earlier: point ``v[t-day+H-1]``, mean and peak
  (every quantile) of ``v[t-day:t-day+H]``; the last value where less than a day exists;
* moving average: point and mean are the mean of the last ``m`` values, ``m`` chosen per
  output on training machines (mean per-machine RMSE);
* global linear AR: ridge least squares from the scale-free features of
  :meth:`SeriesView.features` to the normalized point and mean targets, pooled over the
  training machines, decoded like :func:`metalearn.peaks.decode`;
* recent quantile: the ``q``-quantile of the peaks of every ``H``-long window in the last
  ``spec.context`` steps (of the recent values themselves for ``H = 1``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metalearn.data import Series
from metalearn.errors import DataError
from metalearn.peaks import CLIP, PeakSpec, SeriesView

LAST = "last value"
SEASONAL = "seasonal naive"
MA = "moving average"
AR = "linear AR"
QUANTILE = "recent quantile"

POINT_MEAN = ("point", "mean")
ALL = ("point", "mean", "peak")
DEFINED: dict[str, tuple[str, ...]] = {
    LAST: ALL, SEASONAL: ALL, MA: POINT_MEAN, AR: POINT_MEAN, QUANTILE: ("peak",),
}
MA_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 36, 48, 72, 96, 144)
_FMAX = float(np.finfo(np.float64).max)


def _values(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(v)):
        raise DataError("series contains NaN or infinite values")
    return v


def _origins(origins: np.ndarray, n: int, lo: int = 1) -> np.ndarray:
    t = np.asarray(origins, dtype=np.int64).reshape(-1)
    if t.size and (t.min() < lo or t.max() > n):
        raise DataError(f"origins must be in {lo}..{n}")
    return t


def _column(spec: PeakSpec, h_index: int, kind: int) -> int:
    """Column of output ``kind`` (0 point, 1 mean, 2 + j quantile j) at horizon index."""
    return h_index * spec.outputs_per_horizon + kind


def last_value(values: np.ndarray, origins: np.ndarray, spec: PeakSpec) -> np.ndarray:
    v = _values(values)
    t = _origins(origins, v.size)
    return np.repeat(v[t - 1][:, None], spec.n_outputs, axis=1)


def seasonal_naive(values: np.ndarray, origins: np.ndarray, spec: PeakSpec
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(forecasts, fallback): ``fallback`` marks the origins with less than a day of history,
    forecast with the last value."""
    v = _values(values)
    t = _origins(origins, v.size)
    out = last_value(v, t, spec)
    has = t >= spec.day
    if has.any():
        d0 = t[has] - spec.day
        s1 = np.concatenate([[0.0], np.cumsum(v)])
        for i, h in enumerate(spec.horizons):
            out[has, _column(spec, i, 0)] = v[d0 + h - 1]
            out[has, _column(spec, i, 1)] = (s1[d0 + h] - s1[d0]) / h
            top = _rolling_max(v, h)[d0]
            for j in range(len(spec.quantiles)):
                out[has, _column(spec, i, 2 + j)] = top
    return out, ~has


def _rolling_max(v: np.ndarray, width: int) -> np.ndarray:
    if v.size < width:
        return np.zeros(0)
    return np.lib.stride_tricks.sliding_window_view(v, width).max(axis=1)


def recent_quantile(values: np.ndarray, origins: np.ndarray, spec: PeakSpec) -> np.ndarray:
    """Peak quantiles: for each horizon ``H`` and quantile ``q``, the ``q``-quantile (linear
    interpolation, as :func:`numpy.quantile`) of ``max(v[j:j+H])`` over the windows with
    ``t - context <= j`` and ``j + H <= t``; the last value where no such window exists.
    Point and mean are the last value."""
    v = _values(values)
    t = _origins(origins, v.size)
    out = last_value(v, t, spec)
    qs = np.asarray(spec.quantiles)
    for i, h in enumerate(spec.horizons):
        rm = _rolling_max(v, h)  # rm[j] = max(v[j:j+h])
        start = np.maximum(0, t - spec.context)
        count = t - h - start + 1  # windows available at each origin
        full_len = spec.context - h + 1
        res = np.empty((t.size, qs.size))
        full = (t >= spec.context) & (count == full_len)
        if full.any():
            win = np.lib.stride_tricks.sliding_window_view(rm, full_len)[t[full] - spec.context]
            res[full] = _row_quantiles(win, np.full(win.shape[0], full_len), qs)
        part = ~full & (count > 0)
        if part.any():
            width = int(count[part].max())
            idx = start[part][:, None] + np.arange(width)[None, :]
            ok = idx < (start[part] + count[part])[:, None]
            rows = np.where(ok, rm[np.where(ok, idx, 0)], np.inf)
            res[part] = _row_quantiles(rows, count[part], qs)
        none = count <= 0
        res[none] = v[t[none] - 1][:, None]
        for j in range(qs.size):
            out[:, _column(spec, i, 2 + j)] = res[:, j]
    return out


def _row_quantiles(rows: np.ndarray, counts: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """Row-wise linear-interpolation quantiles of the first ``counts[i]`` entries of row i
    (the rest +inf); ``rows`` is sorted in place (numpy's sort beats partition here)."""
    pos = qs[None, :] * (counts[:, None] - 1.0)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, counts[:, None] - 1)
    frac = pos - lo
    rows.sort(axis=1)
    r = np.arange(rows.shape[0])[:, None]
    a, b = rows[r, lo], rows[r, hi]
    return a + (b - a) * frac


@dataclass(frozen=True)
class MovingAverage:
    """Point and mean at each horizon: the mean of the last ``widths[c]`` values (one width
    per output column; peak columns are the last value and their width is 1)."""

    spec: PeakSpec
    widths: tuple[int, ...]

    @classmethod
    def fit(cls, train: Sequence[Series], spec: PeakSpec, candidates: Sequence[int] = MA_WIDTHS,
            per_machine: int = 300, seed: int = 0) -> MovingAverage:
        """For each point and mean output, the candidate width with the lowest mean
        per-machine RMSE over up to ``per_machine`` random origins of each training machine
        (origins from ``max(candidates)`` on, so every width fits)."""
        cand = np.array(sorted({int(c) for c in candidates if int(c) >= 1}))
        if cand.size == 0:
            raise DataError("moving average: no candidate width >= 1")
        rng = np.random.default_rng(seed)
        lo = int(cand.max())
        cols = [_column(spec, i, k) for i in range(len(spec.horizons)) for k in (0, 1)]
        rmse_sum = np.zeros((cand.size, len(cols)))
        machines = np.zeros(len(cols))
        for s in train:
            v = _values(s.values)
            if v.size <= lo:
                continue
            t = np.arange(lo, v.size)
            if t.size > per_machine:
                t = np.sort(rng.choice(t, size=per_machine, replace=False))
            s1 = np.concatenate([[0.0], np.cumsum(v)])
            preds = (s1[t][None, :] - s1[t[None, :] - cand[:, None]]) / cand[:, None]
            for c, col in enumerate(cols):
                h = spec.horizons[col // spec.outputs_per_horizon]
                ok = t + h <= v.size
                if not ok.any():
                    continue
                tt = t[ok]
                truth = v[tt + h - 1] if col % spec.outputs_per_horizon == 0 else \
                    (s1[tt + h] - s1[tt]) / h
                err = preds[:, ok] - truth[None, :]
                rmse_sum[:, c] += np.sqrt((err * err).mean(axis=1))
                machines[c] += 1
        if not machines.all():
            raise DataError("moving average: no training series is long enough to fit widths "
                            f"up to {lo} steps")
        best = cand[np.argmin(rmse_sum / machines, axis=0)]
        widths = [1] * spec.n_outputs
        for c, col in enumerate(cols):
            widths[col] = int(best[c])
        return cls(spec, tuple(widths))

    def predict(self, values: np.ndarray, origins: np.ndarray) -> np.ndarray:
        v = _values(values)
        t = _origins(origins, v.size, lo=max(self.widths))
        s1 = np.concatenate([[0.0], np.cumsum(v)])
        out = last_value(v, t, self.spec)
        for col, m in enumerate(self.widths):
            if self.spec.output_levels[col] == 0.0:
                out[:, col] = (s1[t] - s1[t - m]) / m
        return out


@dataclass(frozen=True)
class LinearAR:
    """Ridge regression from the scale-free features (plus an intercept) to the normalized
    point and mean targets; ``coef`` is (n_features + 1, 2 * len(horizons)), its columns the
    point and mean outputs in output order, its last row the intercept."""

    spec: PeakSpec
    coef: np.ndarray

    @classmethod
    def fit(cls, train: Sequence[Series], spec: PeakSpec, per_machine: int = 400,
            ridge: float = 1.0, seed: int = 0) -> LinearAR:
        rng = np.random.default_rng(seed)
        cols = [_column(spec, i, k) for i in range(len(spec.horizons)) for k in (0, 1)]
        xs, ys, ms = [], [], []
        for s in train:
            view = SeriesView(s.values, spec)
            if view.n <= spec.window:
                continue
            t = np.arange(spec.window, view.n)
            if t.size > per_machine:
                t = rng.choice(t, size=per_machine, replace=False)
            x, _, _ = view.features(t)
            y, m = view.targets(t)
            xs.append(x), ys.append(y[:, cols]), ms.append(m[:, cols])
        if not xs:
            raise DataError(f"linear AR: no training series longer than {spec.window} values")
        x = np.concatenate(xs)
        a = np.column_stack([x, np.ones(len(x))])
        y, m = np.concatenate(ys), np.concatenate(ms)
        coef = np.zeros((a.shape[1], len(cols)))
        reg = ridge * np.eye(a.shape[1])
        reg[-1, -1] = 0.0  # the intercept is not shrunk
        for c in range(len(cols)):
            ok = m[:, c] > 0
            if not ok.any():
                raise DataError("linear AR: no training target at horizon "
                                f"{spec.horizons[cols[c] // spec.outputs_per_horizon]}")
            aa = a[ok]
            coef[:, c] = np.linalg.solve(aa.T @ aa + reg, aa.T @ y[ok, c])
        return cls(spec, coef)

    def predict(self, values: np.ndarray, origins: np.ndarray,
                view: SeriesView | None = None) -> np.ndarray:
        """Forecasts at ``origins`` (``window <= t <= n``); ``view``: the series' view if
        one is at hand (saves building it again)."""
        sp = self.spec
        v = _values(values)
        view = SeriesView(v, sp) if view is None else view
        t = _origins(origins, v.size, lo=sp.window)
        x, r, s = view.features(t)
        z = np.clip(x @ self.coef[:-1] + self.coef[-1], -CLIP, CLIP)
        with np.errstate(over="ignore"):
            vals = np.clip((r[:, None] + s[:, None] * z) * view.unit, -_FMAX, _FMAX)
        out = last_value(v, t, sp)
        cols = [_column(sp, i, k) for i in range(len(sp.horizons)) for k in (0, 1)]
        out[:, cols] = vals
        return out

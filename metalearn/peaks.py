"""What the peak forecaster sees and predicts: scale-free features and targets (numpy only).

Placement needs to know how high a machine's background load will go while a task runs, not
its mean next step. For a forecast origin ``t`` (values ``v[:t]`` known) and each horizon ``H``
of :attr:`PeakSpec.horizons` (in steps) the targets are

* ``point``: the value ``H`` steps ahead, ``v[t + H - 1]``;
* ``mean``: the mean of the next ``H`` values (the mean path);
* ``q<p>`` for each quantile ``p`` of :attr:`PeakSpec.quantiles`: the peak ``max(v[t:t+H])``,
  learned with the pinball loss at ``p`` so the output is that quantile of the peak.

Features, for the same origin: the last ``window`` values; the same stretch one day earlier
(point, mean and max over each horizon, starting at ``t - day``), so daily cycles can be
predicted hours ahead; the mean and max of the last ``context`` values; and a flag saying
whether a day of history exists (if not, the seasonal features are zero).

Scale-free: everything is taken relative to the recent level ``r`` (mean of the window) in
units of the context's spread ``s`` (its standard deviation, at least 1 % of its mean
magnitude), so ``c * v`` gives the same features as ``v`` for any ``c > 0`` and a series of
bytes or requests is seen like one of CPU %. Features and outputs are clipped to
:data:`CLIP` spreads, so any finite series gives finite, bounded forecasts.

Both the training code (torch) and the agents' runtime (numpy) compute features here, so
they agree by construction.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from metalearn.errors import ForecastError

CLIP = 50.0  # features and outputs, in context spreads around the recent level
MIN_SPREAD = 0.01  # the spread is at least this fraction of the context's mean magnitude
# the spread of a context that is all zeros (of the prescaled series): forecasts stay ~0
ZERO_SPREAD = 1e-12
FEW = 32  # up to this many windows, maxima are taken by slicing
_FMAX = float(np.finfo(np.float64).max)


@dataclass(frozen=True)
class PeakSpec:
    """Shapes of the peak forecaster's inputs and outputs (steps are the traces' 5 minutes)."""

    window: int = 24
    horizons: tuple[int, ...] = (1, 6, 24, 96)
    quantiles: tuple[float, ...] = (0.5, 0.9)
    day: int = 288
    context: int = 288

    def __post_init__(self) -> None:
        hs, qs = tuple(int(h) for h in self.horizons), tuple(float(q) for q in self.quantiles)
        object.__setattr__(self, "horizons", hs)
        object.__setattr__(self, "quantiles", qs)
        if self.window < 2 or self.context < self.window or self.day < 1:
            raise ForecastError(f"invalid peak spec: window {self.window}, context "
                                f"{self.context}, day {self.day}")
        if not hs or list(hs) != sorted(set(hs)) or hs[0] < 1 or hs[-1] > self.day:
            raise ForecastError(f"horizons must be increasing steps in 1..{self.day}, got {hs}")
        if not qs or list(qs) != sorted(set(qs)) or not (0.0 < qs[0] and qs[-1] < 1.0):
            raise ForecastError(f"quantiles must be increasing, strictly between 0 and 1: {qs}")

    @property
    def outputs_per_horizon(self) -> int:
        return 2 + len(self.quantiles)

    @property
    def n_features(self) -> int:
        return self.window + 3 * len(self.horizons) + 3

    @property
    def n_outputs(self) -> int:
        return len(self.horizons) * self.outputs_per_horizon

    @property
    def output_names(self) -> tuple[str, ...]:
        kinds = ("point", "mean", *(quantile_name(q) for q in self.quantiles))
        return tuple(f"{k}@{h}" for h in self.horizons for k in kinds)

    @property
    def quantile_columns(self) -> np.ndarray:
        """Boolean mask of the outputs trained with the pinball loss."""
        per = [False, False, *([True] * len(self.quantiles))]
        return np.array(per * len(self.horizons))

    @property
    def output_levels(self) -> np.ndarray:
        """For each output, its quantile level (0 where the output is a point or mean)."""
        per = [0.0, 0.0, *self.quantiles]
        return np.array(per * len(self.horizons))

    @property
    def output_horizons(self) -> np.ndarray:
        return np.repeat(np.array(self.horizons), self.outputs_per_horizon)

    def min_history(self) -> int:
        return self.window

    def to_dict(self) -> dict:
        d = asdict(self)
        d["horizons"], d["quantiles"] = list(self.horizons), list(self.quantiles)
        return d


def quantile_name(q: float) -> str:
    return f"q{round(q * 100):d}"


class SeriesView:
    """One series with prefix sums and rolling maxima, so features and targets at many origins
    are a few array lookups each."""

    def __init__(self, values: np.ndarray, spec: PeakSpec) -> None:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(v)):
            raise ForecastError("series contains NaN or infinite values")
        top = float(np.max(np.abs(v))) if v.size else 0.0
        # Prescaled to at most 1 in magnitude: sums of squares cannot overflow, and every
        # feature is scale-free anyway. `unit` brings forecasts back to the caller's units.
        self.unit = top if top > 0.0 else 1.0
        self.v = v / self.unit
        self.spec = spec
        self.n = v.size
        self._s1 = np.concatenate([[0.0], np.cumsum(self.v)])
        self._s2 = np.concatenate([[0.0], np.cumsum(self.v * self.v)])
        self._sa = np.concatenate([[0.0], np.cumsum(np.abs(self.v))])
        self._table: list[np.ndarray] | None = None  # maxima over 2**k spans, when needed

    def _mean(self, start: np.ndarray, width: np.ndarray | int) -> np.ndarray:
        return (self._s1[start + width] - self._s1[start]) / width

    def level_and_spread(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sp = self.spec
        t = np.asarray(origins, dtype=np.int64)
        r = self._mean(t - sp.window, sp.window)
        c0 = np.maximum(0, t - sp.context)
        n = t - c0
        m = (self._s1[t] - self._s1[c0]) / n
        var = np.maximum(0.0, (self._s2[t] - self._s2[c0]) / n - m * m)
        mag = (self._sa[t] - self._sa[c0]) / n
        s = np.maximum(np.sqrt(var), MIN_SPREAD * mag)
        return r, np.where(s > 0.0, s, ZERO_SPREAD)

    def features(self, origins: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features (n, n_features), level r, spread s) for origins ``window <= t <= n``."""
        sp = self.spec
        t = np.asarray(origins, dtype=np.int64).reshape(-1)
        if t.size and (t.min() < sp.window or t.max() > self.n):
            raise ForecastError(f"origins must be in {sp.window}..{self.n}")
        r, s = self.level_and_spread(t)
        recent = self.v[t[:, None] + np.arange(-sp.window, 0)[None, :]]
        seasonal = []
        has_day = t >= sp.day
        d0 = np.where(has_day, t - sp.day, 0)
        for h in sp.horizons:
            width = np.minimum(h, np.maximum(self.n - d0, 1))
            point = self.v[np.minimum(d0 + h - 1, self.n - 1)]
            seasonal += [point, self._mean(d0, width), self._rolling(h, d0)]
        c0 = np.maximum(0, t - sp.context)
        ctx_mean = (self._s1[t] - self._s1[c0]) / (t - c0)
        ctx_max = self._window_max(c0, t)
        raw = np.column_stack([recent, *seasonal, ctx_mean, ctx_max])
        z = (raw - r[:, None]) / s[:, None]
        nseason = 3 * len(sp.horizons)
        z[:, sp.window:sp.window + nseason] *= has_day[:, None]
        x = np.column_stack([np.clip(z, -CLIP, CLIP), has_day.astype(np.float64)])
        return x, r, s

    def _rolling(self, width: int, start: np.ndarray) -> np.ndarray:
        """max(v[start:start+width]), the window cut at the series' end."""
        return self._window_max(start, np.minimum(start + width, self.n))

    def _window_max(self, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """max(v[start:stop]) (stop > start). Few windows are sliced; many are looked up in a
        sparse table of maxima over power-of-two spans (built once, two lookups each)."""
        start, stop = np.asarray(start, dtype=np.int64), np.asarray(stop, dtype=np.int64)
        if len(start) <= FEW:
            return np.array([self.v[a:b].max() for a, b in zip(start, stop, strict=True)])
        if self._table is None:
            self._table = [self.v]
            span = 1
            while 2 * span <= self.n:
                prev = self._table[-1]
                self._table.append(np.maximum(prev[:-span], prev[span:]))
                span *= 2
        k = np.floor(np.log2(stop - start)).astype(np.int64)
        out = np.empty(len(start))
        for level in np.unique(k):
            sel = k == level
            row = self._table[level]
            out[sel] = np.maximum(row[start[sel]], row[stop[sel] - (1 << level)])
        return out

    def targets(self, origins: np.ndarray, known: int | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """Normalized targets (n, n_outputs) and their mask: 1 where ``t + H <= known``
        (default: the series' length), i.e. where the target lies in what is known."""
        sp = self.spec
        known = self.n if known is None else int(known)
        t = np.asarray(origins, dtype=np.int64).reshape(-1)
        r, s = self.level_and_spread(t)
        cols, mask = [], []
        for h in sp.horizons:
            ok = t + h <= known
            tt = np.where(ok, t, 0)  # masked rows: any valid index, values unused
            hh = np.minimum(h, self.n - tt)
            point = self.v[tt + hh - 1]
            mean = self._mean(tt, hh)
            top = self._window_max(tt, tt + hh)
            cols += [point, mean, *([top] * len(sp.quantiles))]
            mask += [ok] * sp.outputs_per_horizon
        y = (np.column_stack(cols) - r[:, None]) / s[:, None]
        m = np.column_stack(mask).astype(np.float64)
        return np.clip(y, -CLIP, CLIP) * m, m


@dataclass(frozen=True)
class PeakForecast:
    """One forecast in the caller's units: per horizon (steps), the value at that lead, the
    mean over it, and the quantiles of the peak over it. Peaks never decrease with the
    horizon and upper quantiles are never below lower ones."""

    horizons: tuple[int, ...]
    point: tuple[float, ...]
    mean: tuple[float, ...]
    peaks: dict[float, tuple[float, ...]] = field(default_factory=dict)

    def peak(self, quantile: float, steps: float) -> float:
        """The ``quantile`` of the peak over the first ``steps`` steps: the forecast of the
        shortest horizon that covers them (the longest if none does)."""
        row = self.peaks[quantile]
        for h, v in zip(self.horizons, row, strict=True):
            if h >= steps:
                return v
        return row[-1]


def decode(spec: PeakSpec, out: np.ndarray, r: np.ndarray, s: np.ndarray, unit: float
           ) -> np.ndarray:
    """Network outputs (n, n_outputs, normalized) to values in the caller's units, each
    horizon's quantiles put in order and peaks made non-decreasing with the horizon."""
    z = np.clip(np.asarray(out, dtype=np.float64), -CLIP, CLIP)
    with np.errstate(over="ignore"):  # a unit near the float limit: saturate, never inf
        vals = np.clip((r[:, None] + s[:, None] * z) * unit, -_FMAX, _FMAX)
    per = vals.reshape(len(vals), len(spec.horizons), spec.outputs_per_horizon)
    q = np.maximum.accumulate(per[:, :, 2:], axis=2)  # quantiles ordered
    per[:, :, 2:] = np.maximum.accumulate(q, axis=1)  # peaks grow with the horizon
    return per.reshape(len(vals), spec.n_outputs)


def to_forecast(spec: PeakSpec, row: np.ndarray) -> PeakForecast:
    """One decoded row as a :class:`PeakForecast`."""
    per = np.asarray(row).reshape(len(spec.horizons), spec.outputs_per_horizon)
    return PeakForecast(
        horizons=spec.horizons,
        point=tuple(float(x) for x in per[:, 0]),
        mean=tuple(float(x) for x in per[:, 1]),
        peaks={q: tuple(float(x) for x in per[:, 2 + j]) for j, q in enumerate(spec.quantiles)},
    )

"""Peak forecasters as agents run them: numpy only (no torch), same interface for all kinds.

    fc = PeakForecaster.load()            # the shipped meta-initialization (peak_forecaster.npz)
    node = fc.adapt(history)              # this machine's own past values, any unit, oldest first
    node.forecast(history)                # a PeakForecast for the origin after history's last value

``adapt`` takes ``shots`` origins of the history as support examples (the newest ones and,
once the history holds a day with a daily cycle in it, some from the same time one day
earlier: :func:`support_grid`; each output counts only if its horizon lies inside the
history) and runs
``inner_steps`` plain gradient steps on the masked loss: squared error on the point and mean
outputs, pinball loss on the peak quantiles, with the meta-learned per-parameter learning
rates. A step that makes the support loss non-finite or larger than before adaptation is
thrown away: the node keeps the meta-initialization and :attr:`PeakNode.fell_back` says so.

Also here, with the same interface: :class:`LastValuePeak` (every output is the last value:
the ablation that keeps placement's machinery and drops the forecast) and the unadapted
meta-initialization (``PeakForecaster.load(adapt=False)``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metalearn.errors import CheckpointError, ForecastError
from metalearn.peaks import PeakForecast, PeakSpec, SeriesView, decode, to_forecast

Params = list[np.ndarray]

FORMAT = "agora-peak-forecaster"
VERSION = 3  # 2: calibration offsets per history regime; 3: support reaching a day back
DEFAULT_PATH = Path(__file__).with_name("peak_forecaster.npz")
DIVERGED = 2.0  # adaptation that ends with more than this times its starting loss is discarded


DAILY_CORR = 0.3  # autocorrelation at one day above which a history counts as daily-cycled


def daily_autocorr(values: np.ndarray, day: int) -> float:
    """Pearson correlation of the series with itself ``day`` steps later (NaN if undefined:
    too short, constant or overflowing)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size < day + 2:
        return float("nan")
    with np.errstate(all="ignore"):
        v = v / np.max(np.abs(v))  # scale-free, and squares of huge values cannot overflow
        a, b = v[:-day], v[day:]
        if not (a.std() > 0.0 and b.std() > 0.0):  # also False for NaN
            return float("nan")
        return float(np.corrcoef(a, b)[0, 1])


def has_daily_cycle(values: np.ndarray, day: int, threshold: float = DAILY_CORR) -> bool:
    c = daily_autocorr(values, day)
    return bool(np.isfinite(c) and c > threshold)


REGIMES = 2  # calibration rows: origins without, and with, a day of history before them


def regime(x: np.ndarray) -> np.ndarray:
    """Each row's calibration regime from its features (the last is the has-a-day flag)."""
    return (x[..., -1] > 0.5).astype(np.intp)


def as_history(values: Sequence[float] | np.ndarray, what: str = "history") -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ForecastError(f"{what}: values must be numbers") from None
    if not np.all(np.isfinite(a)):
        raise ForecastError(f"{what}: contains NaN or infinite values")
    return a


class LastValuePeak:
    """Ablation: every output (point, mean, every peak quantile, every horizon) is the last
    value. Nothing learned, nothing adapted."""

    name = "last-value"

    def __init__(self, spec: PeakSpec | None = None) -> None:
        self.spec = spec or PeakSpec()

    def adapt(self, history: Sequence[float] | np.ndarray) -> LastValuePeak:
        as_history(history)
        return self

    shots = 0
    fell_back = False

    def forecast(self, history: Sequence[float] | np.ndarray) -> PeakForecast:
        h = as_history(history)
        if h.size == 0:
            raise ForecastError("forecast needs at least one past value")
        last = float(h[-1])
        row = (last,) * len(self.spec.horizons)
        return PeakForecast(self.spec.horizons, row, row, {q: row for q in self.spec.quantiles})


# --- the network: forward, masked loss gradients, guarded inner loop -------------------------

PARAM_NAMES = (
    "hidden.weight", "hidden.bias", "out.weight", "out.bias", "skip.weight", "skip.bias",
)


def _tr(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _bias(b: np.ndarray) -> np.ndarray:
    return b if b.ndim == 1 else b[:, None, :]


def forward(params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """``skip(x) + out(tanh(hidden(x)))`` for ``x`` of shape (n, n_features); or for B
    problems at once, ``x`` (B, n, n_features) with one parameter set shared or one per
    problem (a leading B axis on every parameter)."""
    hw, hb, ow, ob, sw, sb = params
    h = np.tanh(x @ _tr(hw) + _bias(hb))
    return x @ _tr(sw) + _bias(sb) + h @ _tr(ow) + _bias(ob)


def loss_and_grads(
    params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, mask: np.ndarray,
    levels: np.ndarray,
) -> tuple[np.ndarray, Params]:
    """The masked training loss and its gradient w.r.t. ``params`` (shapes as in
    :func:`forward`; with a batch of problems, one loss and one gradient each).

    Per output: squared error where ``levels`` is 0 (point and mean), pinball loss at that
    level where it is a quantile; averaged over the unmasked outputs."""
    hw, hb, ow, ob, sw, sb = params
    h = np.tanh(x @ _tr(hw) + _bias(hb))
    e = x @ _tr(sw) + _bias(sb) + h @ _tr(ow) + _bias(ob) - y
    quant = levels > 0.0
    n = np.maximum((mask > 0).sum(axis=(-2, -1)), 1.0)
    pin = np.where(e > 0.0, (1.0 - levels) * e, -levels * e)
    loss = (mask * np.where(quant, pin, e * e)).sum(axis=(-2, -1)) / n
    g = mask * np.where(quant, np.where(e > 0.0, 1.0 - levels, -levels), 2.0 * e) \
        / np.asarray(n)[..., None, None]
    gb = g.sum(-2)
    da = (g @ ow) * (1.0 - h * h)
    return loss, [_tr(da) @ x, da.sum(-2), _tr(g) @ h, gb, _tr(g) @ x, gb.copy()]


def inner_loop(
    params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, mask: np.ndarray,
    levels: np.ndarray, steps: int, lrs: Sequence[np.ndarray] | float,
) -> tuple[Params, np.ndarray, np.ndarray]:
    """``steps`` gradient steps (for one problem, or a batch: see :func:`forward`); returns
    (params, loss before, loss after) and leaves ``params`` unchanged."""
    lr = [lrs] * len(params) if isinstance(lrs, int | float) else list(lrs)
    cur = list(params)
    before = None
    for _ in range(steps):
        loss, grads = loss_and_grads(cur, x, y, mask, levels)
        before = loss if before is None else before
        cur = [p - a * g for p, a, g in zip(cur, lr, grads, strict=True)]
    after, _ = loss_and_grads(cur, x, y, mask, levels)
    return cur, (after if before is None else before), after


def diverged(params: Params, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Per problem: whether an adaptation is to be thrown away (its loss not finite or grown
    beyond :data:`DIVERGED` times the start, or a parameter not finite)."""
    bad = ~(np.isfinite(after) & (after <= DIVERGED * before))
    for p in params:
        flat = p.reshape(np.shape(after) + (-1,))
        bad = bad | ~np.isfinite(flat).all(axis=-1)
    return bad


def support_grid(n: np.ndarray | int, spec: PeakSpec, shots: int, stride: int,
                 near_stride: int = 0, daily: np.ndarray | bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Support origins for histories of ``n`` values (one row per history, newest first) and
    which of them count (a full window before them).

    With a day of history before the oldest window and a daily cycle in it (``daily``, one
    flag per history) and ``near_stride > 0``: half of them (rounded up) the newest origins
    ``near_stride`` apart, the rest from the same moment one day earlier onwards, as far
    apart, whose targets up to the longest horizon are all known. Otherwise the last
    ``shots`` origins, ``stride`` apart. Why the daily-cycle test: on a machine without one,
    yesterday is a worse support than the last hours (docs/forecasting.md, "What was
    tried")."""
    last = np.asarray(n, dtype=np.int64)[..., None] - 1
    j = np.arange(max(shots, 0))
    origins = last - stride * j
    if near_stride > 0:
        recent = (shots + 1) // 2
        near = np.where(j < recent, last - near_stride * j,
                        last - spec.day + near_stride * (j - recent))
        reach = (last - spec.day >= spec.window) & np.asarray(daily, dtype=bool)[..., None]
        origins = np.where(reach, near, origins)
    return origins, origins >= spec.window


def support_origins(n: int, spec: PeakSpec, shots: int, stride: int, near_stride: int = 0,
                    daily: bool = True) -> np.ndarray:
    """The support origins of one history of ``n`` values (see :func:`support_grid`)."""
    origins, valid = support_grid(n, spec, shots, stride, near_stride, daily)
    return origins[valid]


class PeakNode:
    """One machine's adapted peak forecaster; holds only its own parameters."""

    def __init__(self, base: PeakForecaster, params: Params, shots: int, fell_back: bool
                 ) -> None:
        self.base = base
        self.params = params
        self.shots = shots
        self.fell_back = fell_back

    @property
    def spec(self) -> PeakSpec:
        return self.base.spec

    def outputs(self, view: SeriesView, origins: np.ndarray) -> np.ndarray:
        """Normalized outputs at many origins of one series (calibration offsets added)."""
        x, _, _ = view.features(origins)
        return self.base.calibrated(forward(self.params, x), x)

    def predict(self, view: SeriesView, origins: np.ndarray) -> np.ndarray:
        """Forecasts at many origins of one series, (n, n_outputs) in the series' units."""
        x, r, s = view.features(origins)
        return decode(self.spec, self.base.calibrated(forward(self.params, x), x), r, s,
                      view.unit)

    def forecast(self, history: Sequence[float] | np.ndarray) -> PeakForecast:
        h = as_history(history, "forecast")
        if h.size < self.spec.window:
            raise ForecastError(f"forecast needs the last {self.spec.window} values, "
                                f"got {h.size}")
        view = SeriesView(h, self.spec)
        x, r, s = view.features(np.array([h.size]))
        out = self.base.calibrated(forward(self.params, x), x)
        return to_forecast(self.spec, decode(self.spec, out, r, s, view.unit)[0])


class PeakForecaster:
    """A loaded meta-initialization with its learned inner-loop rates."""

    name = "meta"

    def __init__(self, spec: PeakSpec, params: Sequence[np.ndarray],
                 lrs: Sequence[np.ndarray] | float, inner_steps: int, shots: int, stride: int,
                 adapt: bool = True, source_hash: str = "",
                 offsets: np.ndarray | None = None, near_stride: int = 0) -> None:
        """``offsets`` (REGIMES, n_outputs): added to the normalized outputs, fitted after
        training so that each peak quantile covers its share of outcomes on training machines
        (0 = none); one row per history regime, see :meth:`calibrated`."""
        self.spec = spec
        self.offsets = np.zeros((REGIMES, spec.n_outputs)) if offsets is None else \
            np.asarray(offsets, dtype=np.float64).reshape(REGIMES, spec.n_outputs)
        self.params: Params = [np.array(p, dtype=np.float64) for p in params]
        self.lrs = float(lrs) if isinstance(lrs, int | float) else \
            [np.array(a, dtype=np.float64) for a in lrs]
        for p in [*self.params, *([] if isinstance(self.lrs, float) else self.lrs)]:
            p.flags.writeable = False  # shared by every node: never modified
        self.inner_steps = int(inner_steps)
        self.shots = int(shots)
        self.stride = int(stride)
        self.near_stride = int(near_stride)
        self.adapts = bool(adapt)
        self.source_hash = source_hash
        self.levels = spec.output_levels
        if not adapt:
            self.name = "meta-init"

    def calibrated(self, out: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Normalized outputs ``out`` (n, n_outputs) plus the offsets of each row's regime,
        read from its features ``x``. Errors differ between origins with a day of history
        (the day-earlier inputs are there) and origins without one: offsets pooled over both
        left machines with short histories under-covered (p90 covered 84-88 %)."""
        return out + self.offsets[regime(x)]

    def min_history(self) -> int:
        return self.spec.window

    def init_node(self) -> PeakNode:
        return PeakNode(self, self.params, 0, False)

    def adapt(self, history: Sequence[float] | np.ndarray, shots: int | None = None
              ) -> PeakNode:
        """Adapt to a machine's own history (any unit, oldest first). Too short a history,
        ``shots=0`` or an unadapted forecaster: the meta-initialization as is."""
        h = as_history(history, "adapt: history")
        k = self.shots if shots is None else int(shots)
        if not self.adapts or k <= 0 or self.inner_steps <= 0 or h.size <= self.spec.window:
            return self.init_node()
        view = SeriesView(h, self.spec)
        origins = support_origins(h.size, self.spec, k, self.stride, self.near_stride,
                                  has_daily_cycle(h, self.spec.day))
        x, _, _ = view.features(origins)
        y, m = view.targets(origins, known=h.size)
        with np.errstate(all="ignore"):
            params, before, after = inner_loop(self.params, x, y, m, self.levels,
                                               self.inner_steps, self.lrs)
            if diverged(params, before, after):
                return PeakNode(self, self.params, 0, True)
        return PeakNode(self, params, len(origins), False)

    @classmethod
    def load(cls, path: str | Path | None = None, adapt: bool = True,
             weights: str = "param", lrs: float | None = None) -> PeakForecaster:
        """Load the shipped forecaster (or ``path``). ``adapt=False``: the meta-initialization
        as is (the ablation); ``weights="joint"``: the jointly trained network, fine-tuned at
        the scalar rate ``lrs``. Raises CheckpointError with a one-line reason."""
        from metalearn.npz_file import read_npz

        path = Path(path) if path is not None else DEFAULT_PATH
        a = read_npz(path, FORMAT, VERSION, rebuild="make forecaster")
        return cls.from_arrays(a, str(path), adapt=adapt, weights=weights, lrs=lrs)

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray], where: str, adapt: bool = True,
                    weights: str = "param", lrs: float | None = None) -> PeakForecaster:
        try:
            spec = PeakSpec(window=int(a["window"]), horizons=tuple(a["horizons"].tolist()),
                            quantiles=tuple(a["quantiles"].tolist()), day=int(a["day"]),
                            context=int(a["context"]))
            hidden, shots = int(a["hidden"]), int(a["shots"])
            stride, steps = int(a["stride"]), int(a["inner_steps"])
            near_stride = int(a["near_stride"])
            params = [np.asarray(a[f"{weights}.{n}"]) for n in PARAM_NAMES]
            rates = [np.asarray(a[f"lr.{n}"]) for n in PARAM_NAMES]
            offsets = np.asarray(a[f"offsets.{weights}"], dtype=np.float64)
        except (KeyError, TypeError, ValueError, ForecastError) as e:
            raise CheckpointError(f"{where}: not a peak forecaster ({type(e).__name__}: {e})") \
                from None
        shapes = {
            "hidden.weight": (hidden, spec.n_features), "hidden.bias": (hidden,),
            "out.weight": (spec.n_outputs, hidden), "out.bias": (spec.n_outputs,),
            "skip.weight": (spec.n_outputs, spec.n_features), "skip.bias": (spec.n_outputs,),
        }
        for n, p, r in zip(PARAM_NAMES, params, rates, strict=True):
            for what, arr in ((weights, p), ("lr", r)):
                if arr.shape != shapes[n] or arr.dtype.kind != "f" or not np.isfinite(arr).all():
                    raise CheckpointError(f"{where}: {what}.{n} is not a finite float array of "
                                          f"shape {shapes[n]}")
        if offsets.shape != (REGIMES, spec.n_outputs) or not np.isfinite(offsets).all():
            raise CheckpointError(f"{where}: offsets.{weights} is not {REGIMES} x "
                                  f"{spec.n_outputs} finite numbers")
        if min(shots, stride) < 1 or steps < 0 or near_stride < 0:
            raise CheckpointError(f"{where}: invalid adaptation settings")
        return cls(spec, params, rates if lrs is None else float(lrs), steps, shots, stride,
                   adapt=adapt, source_hash=str(a["hash"]), offsets=offsets,
                   near_stride=near_stride)

"""Peak forecasters as agents run them: numpy only (no torch), same interface for all kinds.

    fc = PeakForecaster.load()            # the shipped meta-initialization (peak_forecaster.npz)
    node = fc.adapt(history)              # this machine's own past values, any unit, oldest first
    node.forecast(history)                # a PeakForecast for the origin after history's last value

``adapt`` takes the last ``shots`` origins of the history, ``stride`` steps apart, as support
examples (each output counts only if its horizon lies inside the history) and runs
``inner_steps`` plain gradient steps on the masked loss: squared error on the point and mean
outputs, pinball loss on the peak quantiles, with the meta-learned per-parameter learning
rates. A step that makes the support loss non-finite or larger than before adaptation is
thrown away: the node keeps the meta-initialization and :attr:`PeakNode.fell_back` says so.

Also here, with the same interface: :class:`LastValuePeak` (every output is the last value:
the ablation that keeps placement's machinery and drops the forecast) and the unadapted
meta-initialization (``PeakForecaster.load(adapt=False)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from metalearn.errors import ForecastError
from metalearn.peaks import PeakForecast, PeakSpec, SeriesView, decode

Params = list[np.ndarray]


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

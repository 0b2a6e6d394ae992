"""Torch-free runtime of the forecaster: numpy forward, hand-written backward, same results.

Importing torch costs ~0.5 GB RSS per process; agents hosting the forecaster use this module
instead of :mod:`metalearn.runtime`. It reads ``forecaster.npz``, an export of the torch
checkpoint written next to it by ``agora forecast train`` / ``make forecaster``
(:func:`metalearn.checkpoint.export_numpy`), and has the same API and semantics::

    fc = NumpyForecaster.load()            # the shipped export, or a path
    node = fc.adapt(history)               # this node's own recent samples (CPU %)
    node.forecast(history[-fc.window:])    # the next fc.horizon values (CPU %)

``adapt`` runs ``steps`` plain gradient steps ``p <- p - lr * grad(MSE)`` (``lr`` elementwise,
one meta-learned array per parameter, or one number) on the last ``shots`` complete
(window -> horizon) pairs of the normalized history, inputs and targets relative to the
window's mean when the model was trained so. Gradients of the MSE through
``y = skip(x) + out(tanh(hidden(x)))`` are written out by hand; everything is computed in
float64 (the torch runtime uses float32; the two agree to ~1e-6 of the values, checked by
``tests/test_forecast_numpy.py`` on real traces).

This module imports only numpy and :mod:`metalearn.errors` (never torch, nor
:mod:`metalearn.model` / :mod:`metalearn.checkpoint`, which import torch).

The ``.npz`` file: uncompressed zip of ``.npy`` members (``np.load(allow_pickle=False)``)::

    format, version           "agora-forecaster-numpy", 1
    source_hash               content hash of the .pt checkpoint it was exported from
    window, horizon, hidden   int
    relative                  bool (inputs/targets relative to the window mean)
    inner_steps, shots        int (adaptation defaults)
    mean, std                 float64 (normalizer)
    param.<name>, lr.<name>   float32 meta-initialization and inner lrs, <name> in PARAM_NAMES
    hash                      SHA-256 over every other member (name, dtype, shape, bytes)
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from metalearn.errors import CheckpointError, ForecastError

FORMAT = "agora-forecaster-numpy"
VERSION = 1
DEFAULT_PATH = Path(__file__).with_name("forecaster.npz")

# Same order as metalearn.model.PARAM_NAMES (checked by the tests; not imported: torch).
PARAM_NAMES = (
    "hidden.weight", "hidden.bias", "out.weight", "out.bias", "skip.weight", "skip.bias",
)

LR = float | Sequence[np.ndarray]
Params = list[np.ndarray]


# --- network: forward, MSE gradients, inner loop -------------------------------------------

def forward(params: Sequence[np.ndarray], x: np.ndarray) -> np.ndarray:
    """``skip(x) + out(tanh(hidden(x)))`` for a batch ``x`` of shape (n, window)."""
    hw, hb, ow, ob, sw, sb = params
    return x @ sw.T + sb + np.tanh(x @ hw.T + hb) @ ow.T + ob


def mse_grads(
    params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray
) -> tuple[float, Params]:
    """Mean squared error over all (n, horizon) outputs and its gradient w.r.t. ``params``."""
    hw, hb, ow, ob, sw, sb = params
    h = np.tanh(x @ hw.T + hb)  # (n, hidden)
    err = x @ sw.T + sb + h @ ow.T + ob - y  # (n, horizon)
    g = err * (2.0 / err.size)  # dL/dy_hat
    gb = g.sum(0)
    da = (g @ ow) * (1.0 - h * h)  # back through out and tanh, (n, hidden)
    grads = [da.T @ x, da.sum(0), g.T @ h, gb, g.T @ x, gb.copy()]
    return float(np.mean(err * err)), grads


def inner_loop(
    params: Sequence[np.ndarray], x: np.ndarray, y: np.ndarray, steps: int, lr: LR
) -> Params:
    """``steps`` SGD steps on the MSE; returns new arrays (``params`` is not modified).

    ``lr`` is one number (MAML) or one array per parameter of its shape (Meta-SGD).
    """
    lrs = [lr] * len(params) if isinstance(lr, int | float) else list(lr)
    cur = list(params)
    for _ in range(steps):
        _, grads = mse_grads(cur, x, y)
        cur = [p - a * g for p, a, g in zip(cur, lrs, grads, strict=True)]
    return cur


def _finite_1d(values: Sequence[float] | np.ndarray, what: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ForecastError(f"{what}: values must be numbers") from None
    if not np.all(np.isfinite(a)):
        raise ForecastError(f"{what}: contains NaN or infinite values")
    return a


# --- runtime API ------------------------------------------------------------------------------

class NumpyNodeForecaster:
    """One node's adapted forecaster. Cheap to create; holds only its own parameters."""

    def __init__(self, base: NumpyForecaster, params: Params, shots: int) -> None:
        self.base = base
        self.params = params
        self.shots = shots  # support windows actually used (0 = meta-initialization as is)

    def forecast(self, recent: Sequence[float] | np.ndarray) -> np.ndarray:
        """Next ``horizon`` values (original units) after the last ``window`` values given."""
        r = _finite_1d(recent, "forecast")
        if r.shape[0] < self.base.window:
            raise ForecastError(
                f"forecast needs the last {self.base.window} values, got {r.shape[0]}"
            )
        return self.forecast_many(r[None, -self.base.window:])[0]

    def forecast_many(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts for a batch of windows, shape (n, window) -> (n, horizon)."""
        b = self.base
        x = (np.asarray(windows, dtype=np.float64) - b.mean) / b.std
        if x.ndim != 2 or x.shape[1] != b.window:
            raise ForecastError(f"forecast_many needs shape (n, {b.window}), got {x.shape}")
        lvl = b.level(x)
        return (forward(self.params, x - lvl) + lvl) * b.std + b.mean


class NumpyForecaster:
    """A loaded meta-initialization; same semantics as :class:`metalearn.runtime.Forecaster`."""

    def __init__(
        self,
        *,
        window: int,
        horizon: int,
        params: Sequence[np.ndarray],
        inner_lr: LR,
        mean: float,
        std: float,
        inner_steps: int,
        shots: int,
        relative: bool = True,
        source_hash: str = "",
    ) -> None:
        self.window = int(window)
        self.horizon = int(horizon)
        self.params: Params = [np.array(p, dtype=np.float64) for p in params]
        self.hidden = self.params[0].shape[0]
        self.inner_lr: LR = (
            float(inner_lr) if isinstance(inner_lr, int | float)
            else [np.array(a, dtype=np.float64) for a in inner_lr]
        )
        for p in [*self.params, *([] if isinstance(self.inner_lr, float) else self.inner_lr)]:
            p.flags.writeable = False  # shared by every node: never modified
        self.mean = float(mean)
        self.std = float(std)
        self.inner_steps = int(inner_steps)
        self.shots = int(shots)
        self.relative = bool(relative)
        self.source_hash = source_hash

    def level(self, x: np.ndarray) -> np.ndarray:
        """The per-window reference subtracted from inputs and targets (0 if not relative)."""
        m = x.mean(-1, keepdims=True)
        return m if self.relative else m * 0

    @classmethod
    def from_arrays(cls, a: Mapping[str, np.ndarray], where: str = "arrays") -> NumpyForecaster:
        """Build from the members of a ``.npz`` export (validated; ``where`` names the source)."""
        missing = [k for k in _required_keys() if k not in a]
        if missing:
            raise CheckpointError(f"{where}: not a forecaster export (missing {missing[0]!r})")
        try:
            window, horizon, hidden = (int(a[k]) for k in ("window", "horizon", "hidden"))
            mean, std = float(a["mean"]), float(a["std"])
            steps, shots, relative = int(a["inner_steps"]), int(a["shots"]), bool(a["relative"])
        except (TypeError, ValueError):
            raise CheckpointError(f"{where}: malformed configuration values") from None
        shapes = _param_shapes(window, horizon, hidden)
        for n in PARAM_NAMES:
            for key in (f"param.{n}", f"lr.{n}"):
                if a[key].shape != shapes[n] or a[key].dtype.kind != "f":
                    raise CheckpointError(
                        f"{where}: {key} is {a[key].dtype} {a[key].shape}, expected float "
                        f"{shapes[n]}"
                    )
                if not np.all(np.isfinite(a[key])):
                    raise CheckpointError(f"{where}: {key} has NaN or infinite values")
        if min(window, horizon, hidden) <= 0 or not (np.isfinite(mean) and std > 0):
            raise CheckpointError(f"{where}: invalid window/horizon/normalizer values")
        return cls(
            window=window, horizon=horizon,
            params=[a[f"param.{n}"] for n in PARAM_NAMES],
            inner_lr=[a[f"lr.{n}"] for n in PARAM_NAMES],
            mean=mean, std=std, inner_steps=steps, shots=shots, relative=relative,
            source_hash=str(a["source_hash"]),
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> NumpyForecaster:
        """Load a ``.npz`` export (default: the one shipped with agora).

        Raises :class:`~metalearn.errors.CheckpointError` (a ``ForecastError``) with a one-line
        reason if the file is missing, not an export, of another version, corrupt or edited.
        """
        path = Path(path) if path is not None else DEFAULT_PATH
        return cls.from_arrays(read_npz(path), str(path))

    def min_history(self, shots: int = 1) -> int:
        return self.window + self.horizon + shots - 1

    def adapt(
        self,
        history: Sequence[float] | np.ndarray,
        shots: int | None = None,
        steps: int | None = None,
        lr: LR | None = None,
    ) -> NumpyNodeForecaster:
        """Adapt to a node's own recent history (original units, oldest first).

        Uses the most recent ``shots`` complete windows (default: the number used in
        meta-training). Fewer points than one window + horizon: no adaptation, the
        meta-initialization is used as is.
        """
        shots = self.shots if shots is None else int(shots)
        steps = self.inner_steps if steps is None else int(steps)
        lr = self.inner_lr if lr is None else lr
        h = _finite_1d(history, "adapt: history")
        span = self.window + self.horizon
        if shots <= 0 or steps <= 0 or h.shape[0] < span:
            return NumpyNodeForecaster(self, self.params, 0)
        z = (h[-(span + shots - 1):] - self.mean) / self.std
        w = np.lib.stride_tricks.sliding_window_view(z, span)  # the last `shots` windows
        x, y = w[:, :self.window], w[:, self.window:]
        lvl = self.level(x)
        params = inner_loop(self.params, x - lvl, y - lvl, steps, lr)
        return NumpyNodeForecaster(self, params, w.shape[0])


class LastValueNode:
    """Forecast = the last value repeated (``shots`` is always 0)."""

    shots = 0

    def __init__(self, horizon: int) -> None:
        self.horizon = horizon

    def forecast(self, recent: Sequence[float] | np.ndarray) -> np.ndarray:
        r = _finite_1d(recent, "forecast")
        if r.shape[0] < 1:
            raise ForecastError("forecast needs the last 1 values, got 0")
        return np.full(self.horizon, r[-1])


class LastValueForecaster:
    """Ablation baseline with the forecaster interface: no model, nothing learned."""

    window = 1

    def __init__(self, horizon: int = 6) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        self.horizon = int(horizon)

    def min_history(self, shots: int = 1) -> int:
        return self.window + self.horizon + shots - 1

    def adapt(
        self,
        history: Sequence[float] | np.ndarray,
        shots: int | None = None,
        steps: int | None = None,
        lr: object = None,
    ) -> LastValueNode:
        """Nothing to adapt; checks ``history`` like the real forecasters do."""
        _finite_1d(history, "adapt: history")
        return LastValueNode(self.horizon)


# --- the .npz file ----------------------------------------------------------------------------

def _param_shapes(window: int, horizon: int, hidden: int) -> dict[str, tuple[int, ...]]:
    return {
        "hidden.weight": (hidden, window), "hidden.bias": (hidden,),
        "out.weight": (horizon, hidden), "out.bias": (horizon,),
        "skip.weight": (horizon, window), "skip.bias": (horizon,),
    }


def _required_keys() -> list[str]:
    return [
        "source_hash", "window", "horizon", "hidden", "relative", "inner_steps", "shots",
        "mean", "std", *(f"param.{n}" for n in PARAM_NAMES), *(f"lr.{n}" for n in PARAM_NAMES),
    ]


def arrays_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """SHA-256 over every member except ``hash``: name, dtype, shape and bytes, sorted by name."""
    h = hashlib.sha256()
    for k in sorted(arrays):
        if k == "hash":
            continue
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_npz(arrays: Mapping[str, np.ndarray], path: str | Path, fmt: str = FORMAT,
              version: int = VERSION) -> str:
    """Write ``arrays`` plus format, version and hash atomically; return the hash.

    Byte-identical for identical arrays (members sorted, fixed zip timestamps), so rebuilding
    the shipped export from the same checkpoint gives the same file.
    """
    body = {k: np.asarray(v) for k, v in arrays.items()}
    body["format"] = np.asarray(fmt)
    body["version"] = np.asarray(version, dtype=np.int64)
    body["hash"] = np.asarray(arrays_hash(body))
    path = Path(path)
    if not path.parent.is_dir():
        raise CheckpointError(f"{path}: directory {path.parent} does not exist")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for k in sorted(body):
            member = io.BytesIO()
            np.lib.format.write_array(member, body[k], allow_pickle=False)
            info = zipfile.ZipInfo(f"{k}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return str(body["hash"])


def read_npz(path: str | Path, fmt: str = FORMAT, version: int = VERSION,
             rebuild: str = "make forecaster") -> dict[str, np.ndarray]:
    """Read and verify an export of format ``fmt`` and ``version``. Raises
    :class:`CheckpointError` with a one-line reason; ``rebuild`` says how to write a new one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such forecaster file (write it with `{rebuild}`)")
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as e:
        raise CheckpointError(
            f"{path}: not a forecaster export (unreadable as a numpy .npz: {type(e).__name__})"
        ) from None
    if len(arrays) != len(names):
        raise CheckpointError(f"{path}: not a forecaster export (unexpected zip members)")
    got = arrays.get("format")
    if got is None or got.dtype.kind != "U" or str(got) != fmt:
        raise CheckpointError(f"{path}: not a forecaster export (format is not {fmt!r})")
    ver = arrays.get("version")
    if ver is None or ver.dtype.kind not in "iu" or ver.shape != () or int(ver) != version:
        raise CheckpointError(
            f"{path}: export version {None if ver is None else ver.tolist()!r} is not "
            f"supported (this code reads version {version}); rebuild it with `{rebuild}`"
        )
    h = arrays.get("hash")
    if h is None or h.dtype.kind != "U" or str(h) != arrays_hash(arrays):
        raise CheckpointError(f"{path}: export content hash mismatch (file corrupt or edited)")
    return arrays

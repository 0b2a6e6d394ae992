"""Runtime few-shot adaptation for agents: plain torch, no learn2learn.

Load the meta-initialization once per process and share it between nodes::

    fc = Forecaster.load()                 # the shipped checkpoint, or a path
    node = fc.adapt(history)               # this node's own recent samples (CPU %)
    node.forecast(history[-fc.window:])    # the next fc.horizon values (CPU %)

``adapt`` runs the same inner loop as learn2learn's ``MetaSGD.clone().adapt()`` (or
``MAML``'s, with one scalar lr): ``steps`` plain gradient steps ``p <- p - lr * grad(MSE)`` on
all (window -> horizon) pairs of the support windows, in normalized units, where ``lr`` is
either one number or one meta-learned tensor per parameter (elementwise). Each
:class:`NodeForecaster` owns only its adapted parameters (a few thousand floats);
the meta-initialization is never modified.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from metalearn import checkpoint
from metalearn.data import Normalizer
from metalearn.errors import ForecastError
from metalearn.model import PARAM_NAMES, ModelConfig, functional_forward, level, to_relative

LR = float | Sequence[Tensor]


def inner_loop(params: Sequence[Tensor], x: Tensor, y: Tensor, steps: int, lr: LR) -> list[Tensor]:
    """``steps`` SGD steps on the mean squared error; returns new detached tensors.

    ``lr`` is one number for every parameter (MAML) or one tensor per parameter, of the
    parameter's shape (Meta-SGD's meta-learned learning rates).
    """
    lrs = [lr] * len(params) if isinstance(lr, int | float) else list(lr)
    cur = [p.detach().requires_grad_(True) for p in params]
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(functional_forward(cur, x), y)
        grads = torch.autograd.grad(loss, cur)
        cur = [(p - a * g).detach().requires_grad_(True)
               for p, a, g in zip(cur, lrs, grads, strict=True)]
    return [p.detach() for p in cur]


def support_windows(z: Tensor, window: int, horizon: int, shots: int) -> tuple[Tensor, Tensor]:
    """The last ``shots`` complete (input, target) windows of the normalized history ``z``."""
    w = z.unfold(0, window + horizon, 1)  # (n, window + horizon), a view
    if shots < w.shape[0]:
        w = w[w.shape[0] - shots:]
    return w[:, :window], w[:, window:]


class NodeForecaster:
    """One node's adapted forecaster. Cheap to create; holds only its own parameters."""

    def __init__(self, base: Forecaster, params: list[Tensor], shots: int) -> None:
        self.base = base
        self.params = params
        self.shots = shots  # support windows actually used (0 = meta-initialization as is)

    def forecast(self, recent: Sequence[float] | np.ndarray) -> np.ndarray:
        """Next ``horizon`` values (original units) after the last ``window`` values given."""
        r = np.asarray(recent, dtype=np.float32).reshape(-1)
        if r.shape[0] < self.base.window:
            raise ForecastError(
                f"forecast needs the last {self.base.window} values, got {r.shape[0]}"
            )
        return self.forecast_many(r[None, -self.base.window:])[0]

    def forecast_many(self, windows: np.ndarray) -> np.ndarray:
        """Forecasts for a batch of windows, shape (n, window) -> (n, horizon)."""
        b = self.base
        x = torch.from_numpy((np.asarray(windows, dtype=np.float32) - b.mean) / b.std)
        xr, _ = to_relative(x, None, b.cfg)
        with torch.no_grad():
            z = functional_forward(self.params, xr) + level(x, b.cfg)
        return z.numpy().astype(np.float64) * b.std + b.mean


class Forecaster:
    """A loaded meta-initialization (or any initialization of the same network)."""

    def __init__(
        self,
        cfg: ModelConfig,
        params: Sequence[Tensor],
        normalizer: Normalizer,
        inner_lr: LR,
        inner_steps: int,
        shots: int,
    ) -> None:
        self.cfg = cfg
        self.window = cfg.window
        self.horizon = cfg.horizon
        self.params = [p.detach().to(torch.float32).contiguous() for p in params]
        self.mean = float(normalizer.mean)
        self.std = float(normalizer.std)
        self.inner_lr: LR = (
            float(inner_lr) if isinstance(inner_lr, int | float)
            else [t.detach().to(torch.float32).contiguous() for t in inner_lr]
        )
        self.inner_steps = int(inner_steps)
        self.shots = int(shots)

    @classmethod
    def from_checkpoint(cls, body: dict, params_key: str = "meta_params") -> Forecaster:
        """The meta-learned forecaster, or ``params_key="joint_params"`` for the joint network
        (then adapted with its own fine-tuning lr)."""
        cfg = ModelConfig(**body["config"])
        norm = Normalizer(**body["normalizer"])
        adapt = body["adapt"]
        lr: LR
        if params_key == "meta_params":
            src = body["meta_params"]
            lrs = adapt.get("inner_lrs")  # Meta-SGD: one lr tensor per parameter
            lr = adapt["inner_lr"] if lrs is None else [lrs[n] for n in PARAM_NAMES]
        else:
            src = body["baselines"][params_key]
            lr = body["baselines"].get("joint_finetune_lr", adapt["inner_lr"])
        return cls(
            cfg, [src[n] for n in PARAM_NAMES], norm, lr, adapt["inner_steps"], adapt["shots"],
        )

    @classmethod
    def load(cls, path: str | Path | None = None) -> Forecaster:
        """Load a checkpoint (default: the one shipped with agora)."""
        return cls.from_checkpoint(checkpoint.load(path))

    def min_history(self, shots: int = 1) -> int:
        return self.window + self.horizon + shots - 1

    def adapt(
        self,
        history: Sequence[float] | np.ndarray,
        shots: int | None = None,
        steps: int | None = None,
        lr: LR | None = None,
    ) -> NodeForecaster:
        """Adapt to a node's own recent history (original units, oldest first).

        Uses the most recent ``shots`` complete windows (default: the number used in
        meta-training). Fewer points than one window + horizon: no adaptation, the
        meta-initialization is used as is.
        """
        shots = self.shots if shots is None else int(shots)
        steps = self.inner_steps if steps is None else int(steps)
        lr = self.inner_lr if lr is None else lr
        h = np.asarray(history, dtype=np.float32).reshape(-1)
        if not np.all(np.isfinite(h)):
            raise ForecastError("adapt: history contains NaN or infinite values")
        if shots <= 0 or steps <= 0 or h.shape[0] < self.window + self.horizon:
            return NodeForecaster(self, self.params, 0)
        z = torch.from_numpy((h - self.mean) / self.std)
        x, y = to_relative(*support_windows(z, self.window, self.horizon, shots), self.cfg)
        return NodeForecaster(self, inner_loop(self.params, x, y, steps, lr), x.shape[0])

"""Baselines, fitted on the training machines and evaluated by the same code as the forecaster.

* last value: every future step equals the last observed value;
* moving average: mean of the last m values, m chosen per horizon step on training machines;
* global linear autoregression: least squares (window -> horizon, with intercept) pooled over
  all training machines' windows, in normalized units;
* joint network: the same network (same inputs, incl. the relative-to-window-mean transform)
  trained on all training windows (no meta-learning), then fine-tuned on a node's k shots
  by the same runtime inner loop as the MAML forecaster;
* scratch network: the same network from a random initialization trained only on the k shots.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from metalearn.data import Normalizer, Series, make_windows
from metalearn.model import ForecastNet, ModelConfig, build, to_relative

log = logging.getLogger(__name__)


def all_windows(series: list[Series], window: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*(make_windows(s.values, window, horizon) for s in series), strict=True)
    return np.concatenate(xs), np.concatenate(ys)


def last_value(windows: np.ndarray, horizon: int) -> np.ndarray:
    return np.repeat(windows[:, -1:], horizon, axis=1)


@dataclass(frozen=True)
class MovingAverage:
    widths: tuple[int, ...]  # one averaging width per horizon step

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray) -> MovingAverage:
        window = x.shape[1]
        # means[m-1] = mean of the last m values, shape (window, n)
        means = np.cumsum(x[:, ::-1], axis=1).T / np.arange(1, window + 1)[:, None]
        widths = []
        for j in range(y.shape[1]):
            mse = ((means - y[:, j][None, :]) ** 2).mean(axis=1)
            widths.append(int(np.argmin(mse)) + 1)
        return cls(tuple(widths))

    def predict(self, windows: np.ndarray) -> np.ndarray:
        return np.stack([windows[:, -m:].mean(axis=1) for m in self.widths], axis=1)


@dataclass(frozen=True)
class LinearAR:
    coef: np.ndarray  # (window + 1, horizon); last row is the intercept
    norm: Normalizer

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, norm: Normalizer, ridge: float = 1e-3) -> LinearAR:
        a = np.hstack([norm.encode(x), np.ones((x.shape[0], 1))])
        b = norm.encode(y)
        coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ b)
        return cls(coef, norm)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        z = self.norm.encode(windows) @ self.coef[:-1] + self.coef[-1]
        return self.norm.decode(z)


def _network_inputs(
    x: np.ndarray, y: np.ndarray, norm: Normalizer, cfg: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows in the units the networks train on: normalized, relative if the config says."""
    return to_relative(torch.from_numpy(norm.encode(x).astype(np.float32)),
                       torch.from_numpy(norm.encode(y).astype(np.float32)), cfg)  # fmt: skip


def train_joint(
    x: np.ndarray,
    y: np.ndarray,
    norm: Normalizer,
    cfg: ModelConfig,
    seed: int,
    epochs: int,
    batch: int = 256,
    lr: float = 3e-3,
) -> ForecastNet:
    """The same network trained on all training windows pooled (no meta-learning)."""
    net = build(cfg, seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = _network_inputs(x, y, norm, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    for ep in range(epochs):
        perm = torch.randperm(xt.shape[0], generator=gen)
        total = 0.0
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = torch.nn.functional.mse_loss(net(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        log.info("joint baseline epoch %d/%d: train mse %.4f", ep + 1, epochs, total / len(perm))
    return net


def train_scratch(
    x: np.ndarray,
    y: np.ndarray,
    norm: Normalizer,
    cfg: ModelConfig,
    seed: int,
    steps: int = 100,
    lr: float = 1e-2,
) -> ForecastNet:
    """The same network from a random initialization, trained (Adam) on the k shots only."""
    net = build(cfg, seed)
    xt, yt = _network_inputs(x, y, norm, cfg)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        loss = torch.nn.functional.mse_loss(net(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net

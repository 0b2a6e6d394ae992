"""The forecasting network: a small MLP with a linear skip path.

Input: the last ``window`` normalized load values. Output: the next ``horizon`` normalized
values. With ``relative=True`` (the default since measured better, see docs/forecasting.md)
inputs and targets are taken relative to the window's mean: the network sees
``x - mean(x)`` and predicts ``y - mean(x)``; :func:`to_relative` (and adding :func:`level` back)
does that for every network (meta-learned, joint, from scratch) alike.
``y = skip(x) + out(tanh(hidden(x)))`` — the linear skip path is a linear autoregression,
the hidden layer adds what a linear model cannot express.

:func:`functional_forward` computes exactly the module's forward from a flat parameter list in
``module.parameters()`` order; the runtime uses it to run adapted parameters without a module
and without learn2learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    window: int = 12
    horizon: int = 6
    hidden: int = 32
    relative: bool = False  # inputs/targets relative to the window's mean

    def to_dict(self) -> dict[str, int | bool]:
        return asdict(self)


def level(x: Tensor | np.ndarray, cfg: ModelConfig) -> Tensor | np.ndarray:
    """The per-window reference subtracted from inputs and targets (0 if not relative)."""
    m = x.mean(-1, keepdims=True) if isinstance(x, np.ndarray) else x.mean(-1, keepdim=True)
    return m if cfg.relative else m * 0


def to_relative(
    x: Tensor | np.ndarray, y: Tensor | np.ndarray | None, cfg: ModelConfig
) -> tuple:
    """Inputs (and targets) as the network sees them; ``y`` may be None."""
    r = level(x, cfg)
    return x - r, (None if y is None else y - r)


class ForecastNet(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.hidden = nn.Linear(cfg.window, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.horizon)
        self.skip = nn.Linear(cfg.window, cfg.horizon)

    def forward(self, x: Tensor) -> Tensor:
        return self.skip(x) + self.out(torch.tanh(self.hidden(x)))


# Order of ForecastNet.parameters(): hidden.w, hidden.b, out.w, out.b, skip.w, skip.b
PARAM_NAMES = (
    "hidden.weight", "hidden.bias", "out.weight", "out.bias", "skip.weight", "skip.bias",
)


def functional_forward(params: Sequence[Tensor], x: Tensor) -> Tensor:
    hw, hb, ow, ob, sw, sb = params
    h = torch.tanh(torch.addmm(hb, x, hw.t()))
    return torch.addmm(sb, x, sw.t()) + torch.addmm(ob, h, ow.t())


def build(cfg: ModelConfig, seed: int) -> ForecastNet:
    torch.manual_seed(seed)
    return ForecastNet(cfg)

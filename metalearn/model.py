"""The forecasting network: a small MLP with a linear skip path.

Input: the last ``window`` normalized load values. Output: the next ``horizon`` normalized
values. ``y = skip(x) + out(tanh(hidden(x)))`` — the linear skip path is a linear
autoregression, the hidden layer adds what a linear model cannot express.

:func:`functional_forward` computes exactly the module's forward from a flat parameter list in
``module.parameters()`` order; the runtime uses it to run adapted parameters without a module
and without learn2learn.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class ModelConfig:
    window: int = 12
    horizon: int = 6
    hidden: int = 32

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


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

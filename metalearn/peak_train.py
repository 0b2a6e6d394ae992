"""Meta-training the peak forecaster with learn2learn's Meta-SGD, and its joint baseline.

One task = one training machine at one moment ``T``: the support set is ``shots`` origins
before ``T``, laid out as at run time (:func:`metalearn.peak_runtime.support_grid`, with
the daily-cycle test on the last ``history`` values; an output counts only if its horizon
ends by ``T``), the query set origins from the day after ``T``. The inner loop and the loss
are those of :mod:`metalearn.peak_runtime` (squared error on point and mean outputs,
pinball loss on the peak quantiles), written again here in torch so learn2learn can
differentiate through them; ``tests/test_peak_forecaster.py`` checks that both agree.

The result is written straight in the numpy runtime's ``.npz`` format: agents never need
torch. The same data, options and seed give a byte-identical file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from metalearn.data import Series
from metalearn.errors import DataError
from metalearn.peak_runtime import (
    FORMAT,
    PARAM_NAMES,
    REGIMES,
    VERSION,
    PeakForecaster,
    forward,
    has_daily_cycle,
    regime,
    support_origins,
)
from metalearn.peaks import PeakSpec, SeriesView

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PeakTrainConfig:
    spec: PeakSpec = field(default_factory=PeakSpec)
    hidden: int = 64
    epochs: int = 100
    shots: int = 10
    stride: int = 12  # support origins an hour apart: ten of them see the 8-hour targets
    near_stride: int = 3  # daily-cycled history: 15 minutes apart, now and a day earlier
    inner_steps: int = 2
    inner_lr: float = 0.01  # starting value of Meta-SGD's per-parameter rates
    meta_batch: int = 32
    query_size: int = 96
    query_span: int = 288  # query origins within a day after the moment of adaptation
    meta_lr: float = 3e-3
    joint_epochs: int = 4
    history: int = 672  # what an agent keeps: two days and the longest horizon
    readapt_every: int = 12  # an agent re-adapts hourly: calibration scores the hour after
    calibration_moments: int = 8  # adaptations per calibration machine
    seed: int = 0


class PeakNet(nn.Module):
    """``skip(x) + out(tanh(hidden(x)))``: a linear model plus what it cannot express."""

    def __init__(self, spec: PeakSpec, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(spec.n_features, hidden)
        self.out = nn.Linear(hidden, spec.n_outputs)
        self.skip = nn.Linear(spec.n_features, spec.n_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.out(torch.tanh(self.hidden(x)))


def masked_loss(pred: torch.Tensor, y: torch.Tensor, mask: torch.Tensor,
                levels: torch.Tensor) -> torch.Tensor:
    """Same loss as :func:`metalearn.peak_runtime.loss_and_grads`."""
    e = pred - y
    pin = torch.where(e > 0, (1.0 - levels) * e, -levels * e)
    per = torch.where(levels > 0, pin, e * e)
    return (mask * per).sum() / (mask > 0).sum().clamp(min=1)


class MachineTasks:
    """Support/query sets drawn from one machine's series."""

    def __init__(self, series: Series, cfg: PeakTrainConfig) -> None:
        sp = cfg.spec
        self.view = SeriesView(series.values, sp)
        self.cfg = cfg
        # the moment T needs a full window before its oldest support origin and a day after it
        self.lo = sp.window + cfg.stride * (cfg.shots - 1) + 1
        self.hi = self.view.n - 1
        self.usable = self.hi > self.lo

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        cfg, sp = self.cfg, self.cfg.spec
        t = int(rng.integers(self.lo, self.hi))
        daily = has_daily_cycle(self.view.v[max(0, t - cfg.history):t], sp.day)
        so = support_origins(t, sp, cfg.shots, cfg.stride, cfg.near_stride, daily)
        xs, _, _ = self.view.features(so)
        ys, ms = self.view.targets(so, known=t)
        span = np.arange(t, min(self.view.n, t + cfg.query_span))
        qo = rng.choice(span, size=min(cfg.query_size, len(span)), replace=False)
        xq, _, _ = self.view.features(qo)
        yq, mq = self.view.targets(qo)
        return tuple(torch.from_numpy(a.astype(np.float32)) for a in (xs, ys, ms, xq, yq, mq))


def meta_train(train: list[Series], cfg: PeakTrainConfig,
               progress: Callable[[int, int, float], None] | None = None
               ) -> tuple[PeakNet, list[torch.Tensor]]:
    """Meta-SGD over the training machines; returns the initialization and inner rates."""
    import learn2learn as l2l

    torch.manual_seed(cfg.seed)
    net = PeakNet(cfg.spec, cfg.hidden)
    maml = l2l.algorithms.MetaSGD(net, lr=cfg.inner_lr, first_order=True)
    opt = torch.optim.Adam(maml.parameters(), lr=cfg.meta_lr)
    tasks = [m for m in (MachineTasks(s, cfg) for s in train) if m.usable]
    if not tasks:
        raise DataError("no training series is long enough for the window, stride and shots")
    steps = max(1, len(tasks) // cfg.meta_batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs * steps)
    levels = torch.from_numpy(cfg.spec.output_levels.astype(np.float32))
    rng = np.random.default_rng(cfg.seed)
    for ep in range(cfg.epochs):
        order = rng.permutation(len(tasks))
        total = 0.0
        for b in range(steps):
            opt.zero_grad()
            batch = order[b * cfg.meta_batch:(b + 1) * cfg.meta_batch]
            for i in batch:
                xs, ys, ms, xq, yq, mq = tasks[i].sample(rng)
                learner = maml.clone()
                for _ in range(cfg.inner_steps):
                    learner.adapt(masked_loss(learner(xs), ys, ms, levels))
                loss = masked_loss(learner(xq), yq, mq, levels) / len(batch)
                loss.backward()
                total += loss.item()
            opt.step()
            sched.step()
        if progress:
            progress(ep + 1, cfg.epochs, total / steps)
    return net, [p.detach().clone() for p in maml.lrs]


def train_joint(train: list[Series], cfg: PeakTrainConfig, batch: int = 512,
                lr: float = 3e-3, per_machine: int = 400) -> PeakNet:
    """The same network trained on pooled examples of every training machine (no
    meta-learning): the baseline that shows what meta-learning itself adds."""
    sp = cfg.spec
    rng = np.random.default_rng(cfg.seed + 1)
    xs, ys, ms = [], [], []
    for s in train:
        v = SeriesView(s.values, sp)
        if v.n <= sp.window + 1:
            continue
        o = rng.choice(np.arange(sp.window, v.n), size=min(per_machine, v.n - sp.window),
                       replace=False)
        x, _, _ = v.features(o)
        y, m = v.targets(o)
        xs.append(x), ys.append(y), ms.append(m)
    x, y, m = (torch.from_numpy(np.concatenate(a).astype(np.float32)) for a in (xs, ys, ms))
    torch.manual_seed(cfg.seed + 1)
    net = PeakNet(sp, cfg.hidden)
    levels = torch.from_numpy(sp.output_levels.astype(np.float32))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    for ep in range(cfg.joint_epochs):
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(perm), batch):
            idx = perm[i:i + batch]
            loss = masked_loss(net(x[idx]), y[idx], m[idx], levels)
            opt.zero_grad()
            loss.backward()
            opt.step()
        log.info("joint baseline epoch %d/%d", ep + 1, cfg.joint_epochs)
    return net


def calibrate(fc: PeakForecaster, train: list[Series], cfg: PeakTrainConfig,
              machines: int = 300) -> np.ndarray:
    """Offsets (REGIMES, n_outputs) for the normalized outputs, fitted on training machines
    forecast as at run time: see :func:`calibration_residuals` and :func:`fit_offsets`."""
    return fit_offsets(*calibration_residuals(fc, train, cfg, machines), cfg.spec)


def calibration_residuals(fc: PeakForecaster, train: list[Series], cfg: PeakTrainConfig,
                          machines: int = 300
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true - forecast) in normalized units, its mask and each origin's history regime, at
    ``calibration_moments`` random moments on each of ``machines`` training machines: adapted at
    the moment, scored over the ``readapt_every`` origins after it, as an agent forecasts
    (scoring a whole day after one adaptation made the offsets too small for machines that
    re-adapt every hour: gcd-vms p90 covered 84-88 %)."""
    rng = np.random.default_rng(cfg.seed + 2)
    pick = rng.choice(len(train), size=min(machines, len(train)), replace=False)
    res, masks, regimes = [], [], []
    for i in sorted(pick):
        task = MachineTasks(train[i], cfg)
        if not task.usable:
            continue
        for t in rng.integers(task.lo, task.hi, size=cfg.calibration_moments):
            node = fc.adapt(train[i].values[max(0, t - cfg.history):t])
            origins = np.arange(t, min(task.view.n, t + cfg.readapt_every))
            x, _, _ = task.view.features(origins)
            y, m = task.view.targets(origins)
            res.append(y - forward(node.params, x))
            masks.append(m)
            regimes.append(regime(x))
    return np.concatenate(res), np.concatenate(masks) > 0, np.concatenate(regimes)


def fit_offsets(r: np.ndarray, m: np.ndarray, g: np.ndarray, sp: PeakSpec) -> np.ndarray:
    """For each peak quantile q and regime, the q-quantile of that regime's residuals ``r``
    where ``m``; point and mean outputs get 0; a regime without residuals gets the pooled
    offsets."""
    pooled = _quantile_offsets(r, m, sp)
    offsets = np.tile(pooled, (REGIMES, 1))
    for k in range(REGIMES):
        if (g == k).any():
            offsets[k] = _quantile_offsets(r[g == k], m[g == k], sp, fallback=pooled)
    return offsets


def _quantile_offsets(r: np.ndarray, m: np.ndarray, sp: PeakSpec,
                      fallback: np.ndarray | None = None) -> np.ndarray:
    """Per output, the residuals' quantile at the output's level (0 for point and mean)."""
    out = np.zeros(sp.n_outputs) if fallback is None else fallback.copy()
    for j, level in enumerate(sp.output_levels):
        if level <= 0:
            out[j] = 0.0
        elif m[:, j].any():
            out[j] = float(np.quantile(r[m[:, j], j], level))
    return out


def _arrays(net: PeakNet) -> list[np.ndarray]:
    named = dict(net.named_parameters())
    return [named[n].detach().numpy().astype(np.float32) for n in PARAM_NAMES]


def train_file(train: list[Series], held_out: list[Series], out: str | Path,
               cfg: PeakTrainConfig, data_name: str,
               progress: Callable[[int, int, float], None] | None = None
               ) -> tuple[str, dict[str, float]]:
    """Meta-train, train the joint baseline, write one ``.npz``; returns (hash, seconds)."""
    from metalearn.npz_file import write_npz

    started = time.perf_counter()
    torch.set_num_threads(1)
    net, lrs = meta_train(train, cfg, progress)
    meta_seconds = time.perf_counter() - started
    joint = train_joint(train, cfg)
    sp = cfg.spec
    common = dict(inner_steps=cfg.inner_steps, shots=cfg.shots, stride=cfg.stride,
                  near_stride=cfg.near_stride)
    meta_fc = PeakForecaster(sp, _arrays(net), [a.numpy() for a in lrs], **common)
    joint_fc = PeakForecaster(sp, _arrays(joint), 0.0, adapt=False, **common)
    arrays: dict[str, np.ndarray] = {
        "window": np.asarray(sp.window), "day": np.asarray(sp.day),
        "context": np.asarray(sp.context),
        "horizons": np.asarray(sp.horizons, dtype=np.int64),
        "quantiles": np.asarray(sp.quantiles, dtype=np.float64),
        "hidden": np.asarray(cfg.hidden), "shots": np.asarray(cfg.shots),
        "stride": np.asarray(cfg.stride), "near_stride": np.asarray(cfg.near_stride),
        "inner_steps": np.asarray(cfg.inner_steps),
        "data_name": np.asarray(data_name),
        "train_digests": np.asarray(sorted(s.digest for s in train)),
        "heldout_digests": np.asarray(sorted(s.digest for s in held_out)),
        "offsets.param": calibrate(meta_fc, train, cfg),
        "offsets.joint": calibrate(joint_fc, train, cfg),
        "training": np.asarray(repr({k: v for k, v in asdict(cfg).items() if k != "spec"})),
    }
    for n, p, a, j in zip(PARAM_NAMES, _arrays(net), lrs, _arrays(joint), strict=True):
        arrays[f"param.{n}"] = p
        arrays[f"lr.{n}"] = a.numpy().astype(np.float32)
        arrays[f"joint.{n}"] = j
    h = write_npz(arrays, out, fmt=FORMAT, version=VERSION)
    return h, {"meta_train": meta_seconds, "total": time.perf_counter() - started}

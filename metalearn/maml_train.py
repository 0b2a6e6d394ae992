"""Meta-training with learn2learn's Meta-SGD (default) or MAML, and the whole `train` pipeline.

This is the only module that imports learn2learn. Meta-SGD (``l2l.algorithms.MetaSGD``) learns
the initialization *and* one inner-loop learning rate per parameter element; MAML learns only
the initialization and uses one fixed inner lr. Each training machine is one task: a
support set of ``shots`` consecutive windows from a random position in that machine's series
and a query set of windows drawn from strictly later in the same series (as at evaluation,
where a node adapts on its first k windows and then forecasts the rest).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from metalearn import checkpoint
from metalearn.baselines import LinearAR, MovingAverage, all_windows, train_joint
from metalearn.data import Normalizer, Series, make_windows, split_by_machine
from metalearn.errors import DataError
from metalearn.model import PARAM_NAMES, ForecastNet, ModelConfig, build, to_relative

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    window: int = 12
    horizon: int = 6
    hidden: int = 32
    relative: bool = True  # network inputs/targets relative to the window's mean
    algo: str = "metasgd"  # "metasgd" (per-parameter inner lrs, meta-learned) or "maml"
    epochs: int = 60
    shots: int = 10
    inner_steps: int = 3
    inner_lr: float = 0.01
    first_order: bool = True
    meta_batch: int = 32
    query_size: int = 128
    meta_lr: float = 1e-2
    lrs_lr: float = 1e-2  # Adam lr of Meta-SGD's inner learning rates
    holdout: float = 0.2
    joint_epochs: int = 6
    seed: int = 0


class TaskSampler:
    """Support/query windows drawn from one machine's own normalized series."""

    def __init__(self, z: np.ndarray, cfg: TrainConfig) -> None:
        x, y = make_windows(z, cfg.window, cfg.horizon)
        self.x, self.y = to_relative(torch.from_numpy(x.astype(np.float32)),
                                     torch.from_numpy(y.astype(np.float32)), model_config(cfg))
        self.cfg = cfg
        # support windows s..s+k-1 cover points up to s+window+horizon+k-2; the first query
        # window whose targets all come later starts at s + horizon + k - 1
        self.max_start = len(x) - (cfg.horizon + cfg.shots - 1) - cfg.query_size // 2

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        k, h = self.cfg.shots, self.cfg.horizon
        s = int(rng.integers(0, self.max_start + 1))
        first_q = s + h + k - 1
        q = rng.choice(np.arange(first_q, len(self.x)),
                       size=min(self.cfg.query_size, len(self.x) - first_q), replace=False)
        qi = torch.from_numpy(q)
        return self.x[s:s + k], self.y[s:s + k], self.x[qi], self.y[qi]


def model_config(cfg: TrainConfig) -> ModelConfig:
    return ModelConfig(cfg.window, cfg.horizon, cfg.hidden, cfg.relative)


def meta_train(
    train: list[Series],
    norm: Normalizer,
    cfg: TrainConfig,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[ForecastNet, list[torch.Tensor] | None]:
    """Meta-train; returns the initialization and (Meta-SGD) the per-parameter inner lrs."""
    import learn2learn as l2l

    net = build(model_config(cfg), cfg.seed)
    if cfg.algo == "metasgd":
        maml = l2l.algorithms.MetaSGD(net, lr=cfg.inner_lr, first_order=cfg.first_order)
        opt = torch.optim.Adam([
            {"params": list(net.parameters())},
            {"params": list(maml.lrs.parameters()), "lr": cfg.lrs_lr},
        ], lr=cfg.meta_lr)
    elif cfg.algo == "maml":
        maml = l2l.algorithms.MAML(net, lr=cfg.inner_lr, first_order=cfg.first_order)
        opt = torch.optim.Adam(maml.parameters(), lr=cfg.meta_lr)
    else:
        raise DataError(f"unknown meta-learning algorithm {cfg.algo!r} (metasgd or maml)")
    steps_per_epoch = max(1, len(train) // cfg.meta_batch)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    samplers = [TaskSampler(norm.encode(s.values), cfg) for s in train]
    samplers = [t for t in samplers if t.max_start >= 0]
    if not samplers:
        raise DataError("no training series is long enough for the window, horizon and shots")
    rng = np.random.default_rng(cfg.seed)
    mse = torch.nn.functional.mse_loss
    for ep in range(cfg.epochs):
        order = rng.permutation(len(samplers))
        ep_loss = 0.0
        for b in range(steps_per_epoch):
            batch = order[b * cfg.meta_batch:(b + 1) * cfg.meta_batch]
            opt.zero_grad()
            for ti in batch:
                xs, ys, xq, yq = samplers[ti].sample(rng)
                learner = maml.clone()
                for _ in range(cfg.inner_steps):
                    learner.adapt(mse(learner(xs), ys))
                loss = mse(learner(xq), yq) / len(batch)
                loss.backward()
                ep_loss += loss.item()
            opt.step()
            sched.step()
        if progress:
            progress(ep + 1, cfg.epochs, ep_loss / steps_per_epoch)
    lrs = [t.detach().clone() for t in maml.lrs] if cfg.algo == "metasgd" else None
    return net, lrs


def _params(net: ForecastNet) -> dict[str, torch.Tensor]:
    named = dict(net.named_parameters())
    return {n: named[n].detach().clone() for n in PARAM_NAMES}


def choose_finetune_lr(
    body: dict, series: list[Series], shots: int, grid: tuple[float, ...]
) -> float:
    """Best fine-tuning lr for the joint network, chosen on (a sample of) training machines."""
    from metalearn.evaluate import JOINT, evaluate

    best_lr, best = 0.0, float("inf")
    for lr in grid:
        trial = dict(body)
        trial["baselines"] = dict(body["baselines"], joint_finetune_lr=lr)
        res = evaluate(trial, series, shots=(shots,), plot_machines=0, skip_scratch=True)
        score = float(np.mean(list(res.row(JOINT, shots).rmse.values())))
        log.info("joint fine-tune lr %g: mean RMSE %.4f on training machines", lr, score)
        if score < best:
            best_lr, best = lr, score
    return best_lr


def train_checkpoint(
    series: list[Series],
    out: str | Path,
    cfg: TrainConfig,
    data_name: str,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[dict, dict[str, float]]:
    """Split by machine, meta-train, fit the baselines, and write one checkpoint file.

    Returns the checkpoint body and wall times in seconds. Timings are not stored in the
    checkpoint, so the same data, options and seed give a byte-identical file.
    """
    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    train, held = split_by_machine(series, cfg.holdout, cfg.seed)
    need = cfg.window + cfg.horizon + cfg.shots - 1 + cfg.query_size // 2
    train = [s for s in train if len(s.values) >= need]
    if not train:
        raise DataError(
            f"no training series has the {need} points needed for window {cfg.window}, "
            f"horizon {cfg.horizon} and {cfg.shots} shots"
        )
    log.info("split by machine: %d training, %d held-out series", len(train), len(held))
    norm = Normalizer.fit(train)
    mcfg = model_config(cfg)

    t_meta = time.perf_counter()
    net, lrs = meta_train(train, norm, cfg, progress)
    meta_seconds = time.perf_counter() - t_meta

    x, y = all_windows(train, cfg.window, cfg.horizon)
    ma = MovingAverage.fit(x, y)
    ar = LinearAR.fit(x, y, norm)
    joint = train_joint(x, y, norm, mcfg, cfg.seed, cfg.joint_epochs)
    body = {
        "config": mcfg.to_dict(),
        "normalizer": {"mean": norm.mean, "std": norm.std},
        "adapt": {"inner_lr": cfg.inner_lr, "inner_steps": cfg.inner_steps, "shots": cfg.shots},
        "meta_params": _params(net),
        "baselines": {
            "joint_params": _params(joint),
            "joint_finetune_lr": cfg.inner_lr,
            "ma_widths": list(ma.widths),
            "ar_coef": torch.from_numpy(ar.coef.astype(np.float64)),
        },
        "training": {
            **{k: v for k, v in asdict(cfg).items()},
            "data_name": data_name,
            "n_train": len(train),
            "n_heldout": len(held),
            "train_digests": [s.digest for s in train],
        },
    }
    if lrs is not None:  # Meta-SGD: the learned per-parameter inner lrs replace inner_lr
        body["adapt"]["inner_lrs"] = dict(zip(PARAM_NAMES, lrs, strict=True))
    # fine-tuning lr for the joint baseline: its best of a small grid on training machines
    rng = np.random.default_rng(cfg.seed)
    sample = [train[i] for i in sorted(rng.choice(len(train), min(100, len(train)), False))]
    grid = tuple(sorted({0.0, cfg.inner_lr / 10, cfg.inner_lr / 3, cfg.inner_lr,
                         cfg.inner_lr * 3, cfg.inner_lr * 10}))
    body["baselines"]["joint_finetune_lr"] = choose_finetune_lr(body, sample, cfg.shots, grid)
    body["hash"] = checkpoint.save(body, out)
    return body, {"meta_train": meta_seconds, "total": time.perf_counter() - started}

"""Walk-forward evaluation of the forecaster and every baseline on the same machines.

Protocol (see docs/forecasting.md): for each machine, the adaptation history is its first
``window + horizon + k - 1`` points (exactly k complete windows); forecasts are then made from
every origin t >= T0 = window + horizon + max(k) - 1 (the same origins for every k and every
method), each from the ``window`` values observed just before t. Errors are in CPU % at
horizon step 1 and step ``horizon``; per-machine RMSE and MAE are averaged over machines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from metalearn.baselines import LinearAR, MovingAverage, last_value, train_scratch
from metalearn.data import Normalizer, Series, history_length, make_windows
from metalearn.errors import DataError
from metalearn.model import PARAM_NAMES, ModelConfig
from metalearn.runtime import Forecaster, NodeForecaster

log = logging.getLogger(__name__)

MAML = "meta-learned (Meta-SGD/MAML init + k-shot adapt)"
JOINT = "joint net + k-shot fine-tune"
SCRATCH = "net from scratch on k shots"
LAST = "last value"
MA = "moving average"
AR = "global linear AR"

NETWORK_METHODS = (MAML, JOINT, SCRATCH)
STATIC_METHODS = (LAST, MA, AR)


@dataclass
class Row:
    method: str
    shots: int | None  # None for methods that do not adapt
    rmse: dict[int, float]  # horizon step -> mean per-machine RMSE
    mae: dict[int, float]
    skill: dict[int, float]  # 1 - RMSE / RMSE(last value)
    r2: dict[int, float]  # pooled R², not the headline


@dataclass
class EvalResult:
    rows: list[Row]
    steps: tuple[int, ...]
    shots: tuple[int, ...]
    machines: list[str]
    skipped_short: int
    seconds: float
    # for plots: machine -> dict of named series (original units), plus eval origins
    traces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    def row(self, method: str, shots: int | None) -> Row:
        for r in self.rows:
            if r.method == method and r.shots == shots:
                return r
        raise KeyError((method, shots))


def eval_windows(v: np.ndarray, window: int, horizon: int, t0: int) -> tuple[np.ndarray, ...]:
    """Inputs and targets for every forecast origin t in [t0, len(v) - horizon]."""
    x, y = make_windows(v, window, horizon)
    start = t0 - window  # row i of make_windows has origin t = i + window
    return x[start:], y[start:]


def series_for_eval(body: dict, series: list[Series]) -> list[Series]:
    """Drop the machines this checkpoint was trained on (matched by content digest)."""
    trained = set(body["training"]["train_digests"])
    out = [s for s in series if s.digest not in trained]
    if len(out) < len(series):
        log.info(
            "%d of %d series were used to train this checkpoint and are not evaluated",
            len(series) - len(out), len(series),
        )
    if not out:
        raise DataError("every series in this directory was used to train the checkpoint")
    return out


def _scratch_predictor(
    cfg: ModelConfig, norm: Normalizer, seed: int
) -> Callable[[np.ndarray, int, np.ndarray], np.ndarray]:
    def predict(history: np.ndarray, k: int, xe: np.ndarray) -> np.ndarray:
        xs, ys = make_windows(history, cfg.window, cfg.horizon)
        net = train_scratch(xs, ys, norm, cfg, seed)
        params = [dict(net.named_parameters())[n] for n in PARAM_NAMES]
        fc = Forecaster(cfg, params, norm, 0.0, 0, 0)
        return NodeForecaster(fc, fc.params, k).forecast_many(xe)

    return predict


def evaluate(
    body: dict,
    series: list[Series],
    shots: Sequence[int] = (0, 5, 10, 20),
    seed: int = 0,
    plot_machines: int = 3,
    skip_scratch: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """Evaluate the checkpoint's forecaster and all its baselines on ``series``."""
    started = time.perf_counter()
    shots = tuple(sorted({int(k) for k in shots}))
    if not shots or shots[0] < 0:
        raise DataError("shots must be non-negative integers")
    cfg = ModelConfig(**body["config"])
    w, h = cfg.window, cfg.horizon
    norm = Normalizer(**body["normalizer"])
    t0 = max(history_length(shots[-1], w, h), w)
    usable = [s for s in series if len(s.values) >= t0 + h]
    if not usable:
        raise DataError(
            f"no series has enough points: window {w} + horizon {h} with {shots[-1]} shots "
            f"needs at least {t0 + h} points, longest has {max(len(s.values) for s in series)}"
        )
    meta = Forecaster.from_checkpoint(body)
    bl = body["baselines"]
    joint = Forecaster.from_checkpoint(body, "joint_params")
    joint_lr = float(bl["joint_finetune_lr"])
    ma = MovingAverage(tuple(int(m) for m in bl["ma_widths"]))
    ar = LinearAR(np.asarray(bl["ar_coef"], dtype=np.float64), norm)
    scratch = _scratch_predictor(cfg, norm, seed)
    steps = (1, h) if h > 1 else (1,)
    cols = [j - 1 for j in steps]

    keys = [(m, None) for m in STATIC_METHODS] + [
        (m, k) for m in NETWORK_METHODS for k in shots
        if not (m == SCRATCH and (k == 0 or skip_scratch))
    ]
    per: dict[tuple[str, int | None], list[np.ndarray]] = {key: [] for key in keys}
    pooled_pred: dict[tuple[str, int | None], list[np.ndarray]] = {key: [] for key in keys}
    pooled_true: list[np.ndarray] = []
    traces: dict[str, dict[str, np.ndarray]] = {}
    for i, s in enumerate(usable):
        v = s.values
        xe, ye = eval_windows(v, w, h, t0)
        yt = ye[:, cols]
        pooled_true.append(yt)
        preds: dict[tuple[str, int | None], np.ndarray] = {
            (LAST, None): last_value(xe, h),
            (MA, None): ma.predict(xe),
            (AR, None): ar.predict(xe),
        }
        for k in shots:
            hist = v[: history_length(k, w, h)]
            preds[(MAML, k)] = meta.adapt(hist, shots=k).forecast_many(xe)
            preds[(JOINT, k)] = joint.adapt(hist, shots=k, lr=joint_lr).forecast_many(xe)
            if k > 0 and not skip_scratch:
                preds[(SCRATCH, k)] = scratch(hist, k, xe)
        for key, p in preds.items():
            pj = p[:, cols]
            err = pj - yt
            # per machine: [rmse per step..., mae per step...]
            per[key].append(np.concatenate([np.sqrt((err**2).mean(0)), np.abs(err).mean(0)]))
            pooled_pred[key].append(pj)
        if i < plot_machines:
            kplot = 10 if 10 in shots else shots[-1]
            traces[s.name] = {
                "values": v,
                "t0": np.asarray(t0),
                "history": np.asarray(history_length(kplot, w, h)),
                "shots": np.asarray(kplot),
                "maml": preds[(MAML, kplot)],
                "last": preds[(LAST, None)],
            }
        if progress:
            progress(i + 1, len(usable))

    truth = np.concatenate(pooled_true)
    base_rmse = np.stack(per[(LAST, None)]).mean(0)[: len(steps)]
    rows = []
    for key in keys:
        m = np.stack(per[key]).mean(0)
        rmse, mae = m[: len(steps)], m[len(steps):]
        pp = np.concatenate(pooled_pred[key])
        r2 = 1 - ((pp - truth) ** 2).sum(0) / ((truth - truth.mean(0)) ** 2).sum(0)
        rows.append(Row(
            method=key[0], shots=key[1],
            rmse=dict(zip(steps, rmse.tolist(), strict=True)),
            mae=dict(zip(steps, mae.tolist(), strict=True)),
            skill=dict(zip(steps, (1 - rmse / base_rmse).tolist(), strict=True)),
            r2=dict(zip(steps, r2.tolist(), strict=True)),
        ))
    return EvalResult(
        rows=rows, steps=steps, shots=shots, machines=[s.name for s in usable],
        skipped_short=len(series) - len(usable), seconds=time.perf_counter() - started,
        traces=traces,
    )


def format_table(res: EvalResult, markdown: bool = False) -> str:
    heads = ["method", "k"]
    for j in res.steps:
        heads += [f"RMSE@{j}", f"MAE@{j}", f"skill@{j}"]
    heads.append(f"R²@{res.steps[0]}")
    body = []
    for r in res.rows:
        cells = [r.method, "-" if r.shots is None else str(r.shots)]
        for j in res.steps:
            cells += [f"{r.rmse[j]:.3f}", f"{r.mae[j]:.3f}", f"{r.skill[j]:+.3f}"]
        cells.append(f"{r.r2[res.steps[0]]:.3f}")
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(heads) + " |", "|" + "|".join("---" for _ in heads) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [max(len(x[i]) for x in [heads, *body]) for i in range(len(heads))]
    fmt = "  ".join(f"{{:<{wd}}}" if i == 0 else f"{{:>{wd}}}" for i, wd in enumerate(widths))
    return "\n".join([fmt.format(*heads)] + [fmt.format(*c) for c in body])


def target_check(res: EvalResult, k: int = 10) -> list[str]:
    """Plain-language check of the headline target at k shots."""
    if k not in res.shots:
        return []
    out = []
    maml = res.row(MAML, k)
    rivals = [r for r in res.rows if r.method != MAML and r.shots in (None, k)]
    for j in res.steps:
        best = min(rivals, key=lambda r: r.rmse[j])
        verdict = "beats" if maml.rmse[j] < best.rmse[j] else "does NOT beat"
        out.append(
            f"horizon {j}: MAML k={k} RMSE {maml.rmse[j]:.3f} {verdict} the best baseline "
            f"({best.method}{'' if best.shots is None else f' k={best.shots}'}, "
            f"{best.rmse[j]:.3f})"
        )
    return out


def plot(res: EvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(res.traces)
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.6 * len(names)), squeeze=False)
    for ax, name in zip(axes[:, 0], names, strict=True):
        tr = res.traces[name]
        v, t0, hist, k = tr["values"], int(tr["t0"]), int(tr["history"]), int(tr["shots"])
        n = tr["maml"].shape[0]
        t = np.arange(t0, t0 + n)
        horizon = tr["maml"].shape[1]
        ax.plot(np.arange(len(v)), v, color="black", lw=1, label="real CPU %")
        ax.plot(t, tr["maml"][:, 0], color="tab:blue", lw=1, label=f"MAML k={k}, 1 step")
        ax.plot(t + horizon - 1, tr["maml"][:, -1], color="tab:orange", lw=1,
                label=f"MAML k={k}, {horizon} steps")
        ax.axvspan(0, hist, color="tab:green", alpha=0.12, label="adaptation history")
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("CPU %")
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("5-minute step")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_report(res: EvalResult, body: dict, model_path: str, data_dir: str, path: Path) -> None:
    png = path.with_suffix(".png")
    plot(res, png)
    tr = body["training"]
    lines = [
        "# Forecaster evaluation",
        "",
        f"- checkpoint: `{model_path}` (hash `{body['hash'][:16]}`), window "
        f"{body['config']['window']}, horizon {body['config']['horizon']}, inputs "
        f"{'relative to the window mean' if body['config'].get('relative') else 'absolute'}, "
        f"inner loop {body['adapt']['inner_steps']} steps at "
        + ("meta-learned per-parameter lrs" if "inner_lrs" in body["adapt"]
           else f"lr {body['adapt']['inner_lr']}")
        + f"; joint net fine-tune lr {body['baselines']['joint_finetune_lr']}",
        f"- trained on {tr['n_train']} machines of `{tr['data_name']}` "
        f"({'first' if tr['first_order'] else 'second'}-order "
        f"{'Meta-SGD' if tr.get('algo') == 'metasgd' else 'MAML'}, {tr['epochs']} epochs, "
        f"seed {tr['seed']})",
        f"- evaluated on {len(res.machines)} machines of `{data_dir}` not used in training"
        + (f" ({res.skipped_short} too short, skipped)" if res.skipped_short else ""),
        f"- horizon steps {', '.join(map(str, res.steps))}; errors in CPU %, per-machine "
        "RMSE/MAE averaged over machines; skill = 1 - RMSE / RMSE(last value); "
        "pooled R² shown for reference only",
        "",
        format_table(res, markdown=True),
        "",
        *[f"- {c}" for c in target_check(res)],
        "",
        f"![real vs forecast]({png.name})",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")

"""`agora forecast train|evaluate` — command-line front end of the forecaster.

``register(subparsers)`` adds the ``forecast`` command to an argparse subparsers object; every
handler returns an exit code. Errors the user can cause are printed as one ``error: ...`` line
on stderr with exit code 2. ``python -m metalearn.cli forecast ...`` works stand-alone.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from metalearn import checkpoint
from metalearn.errors import ForecastError

log = logging.getLogger(__name__)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ForecastError as e:
            print(f"agora: error: {e}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("agora: error: interrupted", file=sys.stderr)
            return 130

    return run


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
    return v


def _shots_list(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not vals or min(vals) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return vals


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {v}")
    return v


@_guard
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from metalearn.data import load_dir
    from metalearn.maml_train import TrainConfig, train_checkpoint

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        window=args.window, horizon=args.horizon, hidden=args.hidden, epochs=args.epochs,
        shots=args.shots, inner_steps=args.inner_steps, inner_lr=args.inner_lr,
        first_order=args.order == "first", meta_batch=args.meta_batch, holdout=args.holdout,
        seed=args.seed, algo=args.algo, relative=args.input == "relative",
    )
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ForecastError(f"{out}: directory {out.parent} does not exist")
    series = load_dir(args.data, skip_bad=args.skip_bad)
    print(f"loaded {len(series)} series from {args.data}", file=sys.stderr)
    started = time.perf_counter()

    def progress(epoch: int, total: int, loss: float) -> None:
        print(f"meta-train epoch {epoch}/{total}  query mse {loss:.4f}  "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    body, secs = train_checkpoint(series, out, cfg, Path(args.data).resolve().name, progress)
    tr = body["training"]
    print(
        f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, hash {body['hash'][:16]}): "
        f"{tr['n_train']} training / {tr['n_heldout']} held-out series, meta-training "
        f"{secs['meta_train']:.0f} s, total {secs['total']:.0f} s"
    )
    npz = out.with_suffix(".npz")  # torch-free export for agents (metalearn.numpy_runtime)
    checkpoint.export_numpy(out, npz)
    print(f"wrote {npz} (torch-free export, {npz.stat().st_size / 1024:.0f} KiB)")
    return 0


@_guard
def cmd_evaluate(args: argparse.Namespace) -> int:
    import torch

    from metalearn.data import load_dir
    from metalearn.evaluate import (
        evaluate,
        format_table,
        series_for_eval,
        target_check,
        write_report,
    )

    if args.threads:
        torch.set_num_threads(args.threads)
    body = checkpoint.load(args.model)
    if args.report is not None and not Path(args.report).parent.is_dir():
        raise ForecastError(f"{args.report}: directory does not exist")
    series = series_for_eval(body, load_dir(args.data, skip_bad=args.skip_bad))

    def progress(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"evaluated {done}/{total} machines", file=sys.stderr, flush=True)

    res = evaluate(body, series, shots=args.shots, seed=args.seed, progress=progress)
    print(f"{len(res.machines)} unseen machines"
          + (f" ({res.skipped_short} too short, skipped)" if res.skipped_short else "")
          + f"; errors in CPU % at horizon steps {', '.join(map(str, res.steps))}")
    print(format_table(res))
    for line in target_check(res):
        print(line)
    if args.report is not None:
        write_report(res, body, args.model or "metalearn/forecaster.pt (shipped)", args.data,
                     Path(args.report))
        print(f"wrote {args.report} and {Path(args.report).with_suffix('.png')}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``forecast train`` and ``forecast evaluate`` to an argparse subparsers object."""
    fc = subparsers.add_parser("forecast", help="meta-learned load forecaster (train, evaluate)")
    sub = fc.add_subparsers(dest="forecast_cmd", required=True, metavar="{train,evaluate}")

    t = sub.add_parser("train", help="meta-train a forecaster on a directory of traces")
    t.add_argument("--data", required=True, help="directory of trace files (one per machine)")
    t.add_argument("--out", default="forecaster.pt", help="checkpoint file to write")
    t.add_argument("--epochs", type=_positive, default=60, help="meta-training epochs")
    t.add_argument("--shots", type=_positive, default=10,
                   help="support windows per task (k) in meta-training and default adaptation")
    t.add_argument("--horizon", type=_positive, default=6, help="steps forecast ahead")
    t.add_argument("--window", type=_positive, default=12, help="input window (steps)")
    t.add_argument("--hidden", type=_positive, default=32, help="hidden units of the MLP")
    t.add_argument("--inner-steps", type=_positive, default=3, help="adaptation steps")
    t.add_argument("--inner-lr", type=float, default=0.01, help="adaptation learning rate")
    t.add_argument("--algo", choices=("metasgd", "maml"), default="metasgd",
                   help="metasgd (default: also meta-learns one inner lr per parameter; "
                   "--inner-lr is their initial value) or maml (one fixed inner lr)")
    t.add_argument("--input", choices=("relative", "absolute"), default="relative",
                   help="network inputs/targets relative to the window's mean (default) "
                   "or absolute; applies to the joint and from-scratch networks too")
    t.add_argument("--order", choices=("first", "second"), default="first",
                   help="MAML order: first (default; measured as accurate and faster) or second")
    t.add_argument("--meta-batch", type=_positive, default=32, help="tasks per meta-update")
    t.add_argument("--holdout", type=_fraction, default=0.2,
                   help="fraction of machine groups held out from training (recorded)")
    t.add_argument("--seed", type=int, default=0, help="random seed (split, init, sampling)")
    t.add_argument("--threads", type=_positive, default=1,
                   help="torch threads (default 1: fastest for this tiny network)")
    t.add_argument("--skip-bad", action="store_true",
                   help="skip and count unreadable trace files instead of failing")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="compare the forecaster with baselines on unseen data")
    e.add_argument("--model", default=None,
                   help=f"checkpoint file (default: the shipped {checkpoint.DEFAULT_PATH.name})")
    e.add_argument("--data", required=True,
                   help="directory of trace files; machines used in training are excluded")
    e.add_argument("--shots", type=_shots_list, default=(0, 5, 10, 20),
                   help="comma-separated adaptation shots k (windows), e.g. 0,5,10,20")
    e.add_argument("--report", default=None, help="write a markdown report (+ PNG plot) here")
    e.add_argument("--seed", type=int, default=0, help="seed of the from-scratch baseline")
    e.add_argument("--threads", type=_positive, default=1,
                   help="torch threads (default 1: fastest for this tiny network)")
    e.add_argument("--skip-bad", action="store_true",
                   help="skip and count unreadable trace files instead of failing")
    e.set_defaults(func=cmd_evaluate)
    return fc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="agora", description="agora forecaster commands")
    register(parser.add_subparsers(dest="cmd", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

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


def _integer(text: str, least: int) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < least:
        raise argparse.ArgumentTypeError(f"must be >= {least}, got {v}")
    return v


def _positive(text: str) -> int:
    return _integer(text, 1)


def _non_negative(text: str) -> int:
    return _integer(text, 0)


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


def held_groups(bundles: list[str]) -> frozenset[str]:
    """Machine groups that must stay unseen: those of the shipped trace bundles, which the
    simulated scenarios replay."""
    from metalearn.data import load_bundle

    return frozenset(s.group for b in bundles for s in load_bundle(b))


SHIPPED_BUNDLES = [str(Path(__file__).resolve().parent.parent / "scenarios" / "traces" / n)
                   for n in ("gcd-vms.tsv.gz", "bitbrains-rnd.tsv.gz")]


@_guard
def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from metalearn.data import load_dir, split_by_machine
    from metalearn.peak_train import PeakTrainConfig, train_file
    from metalearn.peaks import PeakSpec

    torch.set_num_threads(args.threads)
    spec = PeakSpec(window=args.window, horizons=args.horizons, quantiles=args.quantiles)
    cfg = PeakTrainConfig(spec=spec, hidden=args.hidden, epochs=args.epochs, shots=args.shots,
                          stride=args.stride, near_stride=args.near_stride,
                          inner_steps=args.inner_steps, seed=args.seed)
    out = Path(args.out)
    if not out.parent.is_dir():
        raise ForecastError(f"{out}: directory {out.parent} does not exist")
    keep = held_groups(args.hold_out if args.hold_out is not None else SHIPPED_BUNDLES)
    train, held = [], []
    for d in args.data:
        series = load_dir(d, skip_bad=args.skip_bad)
        tr, he = split_by_machine(series, args.holdout, args.seed, keep)
        print(f"{d}: {len(series)} series, {len(tr)} for training, {len(he)} held out",
              file=sys.stderr)
        train += tr
        held += he
    started = time.perf_counter()

    def progress(epoch: int, total: int, loss: float) -> None:
        print(f"meta-train epoch {epoch}/{total}  query loss {loss:.4f}  "
              f"({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)

    name = "+".join(Path(d).resolve().name for d in args.data)
    digest, secs = train_file(train, held, out, cfg, name, progress)
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB, hash {digest[:16]}): "
          f"{len(train)} training / {len(held)} held-out series, meta-training "
          f"{secs['meta_train']:.0f} s, total {secs['total']:.0f} s")
    return 0


def _int_list(text: str) -> tuple[int, ...]:
    vals = _shots_list(text)
    if 0 in vals:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def _quantile_list(text: str) -> tuple[float, ...]:
    try:
        vals = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") \
            from None
    if not vals or not all(0.0 < v < 1.0 for v in vals):
        raise argparse.ArgumentTypeError(f"quantiles must be strictly between 0 and 1: {text!r}")
    return vals


@_guard
def cmd_evaluate(args: argparse.Namespace) -> int:
    from metalearn.data import load_dir
    from metalearn.npz_file import read_npz
    from metalearn.peak_eval import evaluate, format_markdown
    from metalearn.peak_runtime import DEFAULT_PATH, FORMAT, VERSION

    model = Path(args.model) if args.model else DEFAULT_PATH
    trained = {str(d) for d in read_npz(model, FORMAT, VERSION)["train_digests"].tolist()}
    if args.report is not None and not Path(args.report).parent.is_dir():
        raise ForecastError(f"{args.report}: directory does not exist")
    held, train = {}, {}
    for d in args.data:
        series = load_dir(d, skip_bad=args.skip_bad)
        name = Path(d).resolve().name
        held[name] = [s for s in series if s.digest not in trained]
        train[name] = [s for s in series if s.digest in trained]
        print(f"{d}: {len(held[name])} machines not used in training, "
              f"{len(train[name])} used (baselines are fitted on those)", file=sys.stderr)
        if not held[name]:
            raise ForecastError(f"{d}: every series was used to train {model}")
        if not train[name]:
            if args.fit is None:
                raise ForecastError(
                    f"{d}: none of its machines trained {model}, and the baselines are fitted "
                    "on training machines: pass --fit DIR, a directory it was trained on")
            fit = [s for s in load_dir(args.fit, skip_bad=args.skip_bad) if s.digest in trained]
            if not fit:
                raise ForecastError(f"{args.fit}: none of its machines trained {model}")
            train[name] = fit

    def progress(stage: str, done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"{stage}: {done}/{total}", file=sys.stderr, flush=True)

    started = time.perf_counter()
    res = evaluate(model, held, train, shots=args.shots, limit=args.limit, progress=progress)
    text = format_markdown(res)  # ends with the plain-language check of the targets
    print(text)
    print(f"evaluated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.report is not None:
        Path(args.report).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.report}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``forecast train`` and ``forecast evaluate`` to an argparse subparsers object."""
    fc = subparsers.add_parser("forecast", help="meta-learned load forecaster (train, evaluate)")
    sub = fc.add_subparsers(dest="forecast_cmd", required=True, metavar="{train,evaluate}")

    t = sub.add_parser("train", help="meta-train the peak forecaster on directories of traces")
    t.add_argument("--data", required=True, action="append",
                   help="directory of trace files, one per machine (repeat for several sets)")
    t.add_argument("--out", default="peak_forecaster.npz", help="forecaster file to write")
    t.add_argument("--epochs", type=_positive, default=100,  # PeakTrainConfig's (no torch here)
                   help="meta-training epochs")
    t.add_argument("--shots", type=_positive, default=10,
                   help="support examples per adaptation (k), in training and at run time")
    t.add_argument("--stride", type=_positive, default=12,
                   help="steps between support examples (12 = an hour of 5-minute steps)")
    t.add_argument("--near-stride", type=_non_negative, default=3,
                   help="on a history holding a day with a daily cycle, steps between "
                        "support examples taken now and one day earlier (0: never reach a "
                        "day back)")
    t.add_argument("--window", type=_positive, default=24, help="recent values seen (steps)")
    t.add_argument("--horizons", type=_int_list, default=(1, 6, 24, 96),
                   help="comma-separated horizons in steps (default 1,6,24,96)")
    t.add_argument("--quantiles", type=_quantile_list, default=(0.5, 0.9),
                   help="comma-separated quantiles of the peak (default 0.5,0.9)")
    t.add_argument("--hidden", type=_positive, default=64, help="hidden units of the MLP")
    t.add_argument("--inner-steps", type=_positive, default=2, help="adaptation steps")
    t.add_argument("--holdout", type=_fraction, default=0.2,
                   help="fraction of machine groups held out from training (recorded)")
    t.add_argument("--hold-out", action="append", default=None, metavar="BUNDLE",
                   help="also hold out every machine of this trace bundle (default: the "
                   "shipped scenarios/traces bundles)")
    t.add_argument("--seed", type=int, default=0, help="random seed (split, init, sampling)")
    t.add_argument("--threads", type=_positive, default=1,
                   help="torch threads (default 1: fastest for this tiny network)")
    t.add_argument("--skip-bad", action="store_true",
                   help="skip and count unreadable trace files instead of failing")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="compare the forecaster with baselines on unseen data")
    e.add_argument("--model", default=None,
                   help="forecaster file (default: the shipped metalearn/peak_forecaster.npz)")
    e.add_argument("--data", required=True, action="append",
                   help="directory of trace files (repeat for several sets); machines used "
                   "in training are not evaluated, baselines are fitted on them")
    e.add_argument("--shots", type=_shots_list, default=(0, 5, 10, 20),
                   help="comma-separated adaptation shots k, e.g. 0,5,10,20")
    e.add_argument("--fit", default=None, metavar="DIR",
                   help="fit the baselines on this directory's training machines, for data "
                   "sets none of whose machines the forecaster was trained on")
    e.add_argument("--limit", type=_positive, default=None,
                   help="evaluate at most this many machines per data set (quick runs)")
    e.add_argument("--report", default=None, help="also write the markdown tables here")
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

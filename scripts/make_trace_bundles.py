"""Rebuild the trace bundles shipped in scenarios/traces/ from the full data sets.

Tests and shipped scenarios must run in a fresh clone, so a small, cited, deterministic subset
of the real traces ships with the repo. Running this again on the same data gives the same
bytes (sorted inputs, seeded samples, gzip with mtime=0 and no file name):

    .venv/bin/python scripts/make_trace_bundles.py [--data ../shared/data] [--check]

``--check`` rebuilds in memory and compares with the shipped files instead of writing.
Beside the bundles it writes ``digests.tsv``: each chosen series' `Series.digest` as loaded from
its original file, so that a fresh clone (without the data sets) can still check that every
bundled series is the original one (tests/test_trace_bundles.py).
Selecting gcd-vms machines reads the shipped forecaster file, to leave out the
machines it was trained on. See scenarios/traces/README.md for what is chosen and why.
"""

from __future__ import annotations

import argparse
import gzip
import random
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from metalearn.data import load_bundle, load_file, series_digest  # noqa: E402

OUT = ROOT / "scenarios" / "traces"
SEED = 0
GCD_COUNT = 96
BB_COUNT = 48  # half with a daily cycle, half without
BB_MONTH = "-2013-8.txt"  # August 2013
DAY = 288  # 5-minute steps per day
CYCLE_AC = 0.3  # autocorrelation at one day above this = "clear daily cycle"


def cpu_tokens(path: Path) -> list[str]:
    """The CPU column's original text, exactly the tokens `load_file` parses."""
    tokens = [line.split()[0] for line in path.read_text(encoding="utf-8").splitlines()
              if line.strip()]  # fmt: skip
    values = np.asarray([float(t) for t in tokens], dtype=np.float64)
    if series_digest(values) != load_file(path).digest:
        raise SystemExit(f"{path}: tokens do not reproduce load_file's values")
    return tokens


def day_autocorrelation(values: np.ndarray) -> float:
    """Pearson correlation of the series with itself one day later (NaN if either is flat)."""
    a, b = values[:-DAY], values[DAY:]
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


DIGESTS = "digests.tsv"


def digests(name: str, blob: bytes, data: Path) -> list[str]:
    """`bundle<TAB>series<TAB>digest` of each bundled series, the digest taken from the original
    file (not from the bundle: this is what the bundle is checked against)."""
    names = [line.split("\t", 1)[0] for line in gzip.decompress(blob).decode().splitlines()
             if line and not line.startswith("#")]  # fmt: skip
    return [f"{name}\t{n}\t{load_file(data / name / n).digest}" for n in names]


def encode(comment: str, files: list[Path]) -> bytes:
    lines = [f"# {comment}"] + [f"{p.name}\t{' '.join(cpu_tokens(p))}" for p in files]
    return gzip.compress(("\n".join(lines) + "\n").encode("utf-8"), compresslevel=9, mtime=0)


def gcd_bundle(data: Path) -> bytes:
    """96 gcd-vms machines the shipped forecaster was not trained on: seeded sample by name."""
    from scenarios.sim.background import trained_digests

    trained = trained_digests()
    files = sorted(p for p in (data / "gcd-vms").iterdir() if p.name.startswith("vm_"))
    unseen = [p for p in files if load_file(p).digest not in trained]
    chosen = sorted(random.Random(f"{SEED}:gcd-vms").sample(unseen, GCD_COUNT))
    comment = (
        f"gcd-vms: CPU % of {GCD_COUNT} of the {len(unseen)} Google cluster 2011 machines (of "
        f"{len(files)}) the shipped forecaster did not train on; 288 x 5 min; seed {SEED}; "
        "see README.md"
    )
    return encode(comment, chosen)


def bitbrains_bundle(data: Path) -> bytes:
    """48 August-2013 Bitbrains Rnd VM-months: half with a daily cycle, half without."""
    files = sorted((data / "bitbrains-rnd").glob(f"vm*{BB_MONTH}"))
    ac = {p: day_autocorrelation(load_file(p).values) for p in files}
    usable = [p for p in files if not np.isnan(ac[p])]  # flat series: no cycle to speak of
    cyclic = [p for p in usable if ac[p] > CYCLE_AC]
    other = [p for p in usable if ac[p] <= CYCLE_AC]
    rng = random.Random(f"{SEED}:bitbrains-rnd")
    half = BB_COUNT // 2
    chosen = sorted(rng.sample(cyclic, half) + rng.sample(other, BB_COUNT - half))
    comment = (
        f"bitbrains-rnd: CPU % of {BB_COUNT} VM-months, August 2013, GWA-T-12 Rnd; {half} with "
        f"autocorrelation at 1 day > {CYCLE_AC} (of {len(cyclic)}), {BB_COUNT - half} without "
        f"(of {len(other)}); 5 min; seed {SEED}; see README.md"
    )
    return encode(comment, chosen)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                    help="directory holding gcd-vms/ and bitbrains-rnd/")  # fmt: skip
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--check", action="store_true", help="compare with the files, do not write")
    args = ap.parse_args(argv)
    bad = 0
    manifest = ["# bundle\tseries\tSeries.digest of its original file (make_trace_bundles.py)"]
    for name, build in (("gcd-vms", gcd_bundle), ("bitbrains-rnd", bitbrains_bundle)):
        blob = build(args.data)
        manifest += digests(name, blob, args.data)
        path = args.out / f"{name}.tsv.gz"
        if args.check:
            same = path.is_file() and path.read_bytes() == blob
            bad += not same
            print(f"{path}: {'identical' if same else 'DIFFERS'}")
            continue
        path.write_bytes(blob)
        n = len(load_bundle(path))
        print(f"{path}: {n} series, {len(blob):,} bytes")
    text = "\n".join(manifest) + "\n"
    path = args.out / DIGESTS
    if args.check:
        same = path.is_file() and path.read_text() == text
        bad += not same
        print(f"{path}: {'identical' if same else 'DIFFERS'}")
    else:
        path.write_text(text)
        print(f"{path}: {len(manifest) - 1} digests")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""`forecast train|evaluate` end to end on tiny data, and one-line errors on bad input."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn import checkpoint, cli
from metalearn.data import load_dir

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--shots", "3", "--window", "6", "--horizon", "2", "--hidden", "8",
        "--meta-batch", "4", "--holdout", "0.3", "--seed", "0", "--threads", "1"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "forecast", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def _ar_series(rng: np.random.Generator, n: int) -> np.ndarray:
    level = rng.uniform(10, 60)
    x = np.empty(n)
    x[0] = level
    for i in range(1, n):
        x[i] = level + 0.7 * (x[i - 1] - level) + rng.normal(0, 2)
    return np.clip(x, 1, 99)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fc")
    rng = np.random.default_rng(0)
    train, other = base / "vms", base / "csv"
    train.mkdir()
    other.mkdir()
    for i in range(16):
        v = _ar_series(rng, 80)
        (train / f"vm_{i}").write_text("".join(f"{a:.3f} {a / 2:.3f}\n" for a in v))
    for i in range(4):
        v = _ar_series(rng, 60)
        (other / f"node{i}.csv").write_text(
            "timestamp,value\n" + "".join(f"{t * 300},{a:.3f}\n" for t, a in enumerate(v))
        )
    model = base / "m.pt"
    r = run_cli("train", "--data", str(train), "--out", str(model), *TINY)
    assert r.returncode == 0, r.stderr
    assert "meta-train epoch 2/2" in r.stderr
    assert f"wrote {model}" in r.stdout
    return {"base": base, "train": train, "other": other, "model": model}


def test_train_writes_one_checkpoint(data: dict[str, Path]) -> None:
    body = checkpoint.load(data["model"])
    assert body["config"] == {"window": 6, "horizon": 2, "hidden": 8, "relative": True}
    assert set(body["adapt"]["inner_lrs"]) == set(body["meta_params"])
    assert body["training"]["seed"] == 0 and body["training"]["holdout"] == 0.3
    tr = body["training"]
    assert tr["n_train"] + tr["n_heldout"] == 16 and tr["n_heldout"] > 0
    assert len(tr["train_digests"]) == tr["n_train"]
    assert data["model"].stat().st_size < 200_000


def test_evaluate_other_dir_with_report(data: dict[str, Path]) -> None:
    report = data["base"] / "report.md"
    r = run_cli("evaluate", "--model", str(data["model"]), "--data", str(data["other"]),
                "--shots", "0,3", "--report", str(report), "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert "4 unseen machines" in r.stdout
    for name in ("last value", "moving average", "global linear AR", "MAML", "joint net",
                 "from scratch"):
        assert name in r.stdout
    text = report.read_text()
    assert "| method | k | RMSE@1" in text and "![real vs forecast](report.png)" in text
    assert report.with_suffix(".png").stat().st_size > 1000


def test_evaluate_same_dir_uses_only_held_out_machines(data: dict[str, Path], capsys) -> None:
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["forecast", "evaluate", "--model", str(data["model"]),
                              "--data", str(data["train"]), "--shots", "3"])
    assert args.func(args) == 0
    n_held = checkpoint.load(data["model"])["training"]["n_heldout"]
    assert f"{n_held} unseen machines" in capsys.readouterr().out


def test_training_is_reproducible(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "again.pt"
    assert cli.main(["forecast", "train", "--data", str(data["train"]), "--out", str(out),
                     *TINY]) == 0
    a, b = checkpoint.load(data["model"]), checkpoint.load(out)
    for n, t in a["meta_params"].items():
        assert torch.equal(t, b["meta_params"][n])
    assert a["hash"] == b["hash"]
    assert out.read_bytes() == data["model"].read_bytes()


def _one_line_error(r: subprocess.CompletedProcess[str], what: str) -> None:
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("agora: error: ") and what in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_checkpoints(data: dict[str, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(3000))
    _one_line_error(
        run_cli("evaluate", "--model", str(garbage), "--data", str(data["other"])),
        "not a forecaster checkpoint",
    )
    body = torch.load(data["model"], weights_only=True)
    body["version"] = 0
    body["hash"] = checkpoint.content_hash(body)
    old = tmp_path / "old.pt"
    torch.save(body, old)
    _one_line_error(
        run_cli("evaluate", "--model", str(old), "--data", str(data["other"])),
        "version 0 is not supported",
    )


def test_bad_data_dirs(data: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        run_cli("evaluate", "--model", str(data["model"]), "--data", str(empty)),
        "no usable series",
    )
    short = tmp_path / "short"
    short.mkdir()
    (short / "a.csv").write_text("timestamp,value\n" + "".join(f"{t},5\n" for t in range(9)))
    _one_line_error(
        run_cli("evaluate", "--model", str(data["model"]), "--data", str(short),
                "--shots", "0,5"),
        "needs at least 14 points",
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x").write_text("1 2\n3 4\nfoo 5\n")
    _one_line_error(run_cli("train", "--data", str(bad), "--out", str(tmp_path / "o.pt")), "x:3")


def test_loader_skip_bad_matches_cli_flag(data: dict[str, Path]) -> None:
    assert len(load_dir(data["other"], skip_bad=True)) == 4

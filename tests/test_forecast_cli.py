"""`forecast train|evaluate` end to end on tiny data, and one-line errors on bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metalearn import cli
from metalearn.data import load_dir
from metalearn.npz_file import read_npz
from metalearn.peak_runtime import FORMAT, VERSION, PeakForecaster

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--epochs", "2", "--shots", "3", "--stride", "2", "--window", "6", "--horizons", "1,3",
        "--hidden", "8", "--holdout", "0.3", "--seed", "0"]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "forecast", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
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
        v = _ar_series(rng, 300)
        (train / f"vm_{i}").write_text("".join(f"{a:.3f} {a / 2:.3f}\n" for a in v))
    for i in range(4):
        v = _ar_series(rng, 200)
        (other / f"node{i}.csv").write_text(
            "timestamp,value\n" + "".join(f"{t * 300},{a:.3f}\n" for t, a in enumerate(v))
        )
    model = base / "m.npz"
    r = run_cli("train", "--data", str(train), "--out", str(model), *TINY)
    assert r.returncode == 0, r.stderr
    assert "meta-train epoch 2/2" in r.stderr
    assert f"wrote {model}" in r.stdout
    return {"base": base, "train": train, "other": other, "model": model}


def test_train_writes_one_file_agents_can_load(data: dict[str, Path]) -> None:
    a = read_npz(data["model"], FORMAT, VERSION)
    n_train, n_held = len(a["train_digests"]), len(a["heldout_digests"])
    assert n_train + n_held == 16 and n_held > 0
    fc = PeakForecaster.load(data["model"])
    assert fc.spec.window == 6 and fc.spec.horizons == (1, 3) and fc.shots == 3
    v = load_dir(data["other"])[0].values
    f = fc.adapt(v).forecast(v)
    assert all(np.isfinite(f.point)) and f.peaks[0.9][0] >= f.peaks[0.5][0]
    assert data["model"].stat().st_size < 200_000


def test_training_is_reproducible(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "again.npz"
    assert cli.main(["forecast", "train", "--data", str(data["train"]), "--out", str(out),
                     *TINY]) == 0
    assert out.read_bytes() == data["model"].read_bytes()


def test_evaluate_same_dir_uses_only_held_out_machines(data: dict[str, Path]) -> None:
    report = data["base"] / "report.md"
    r = run_cli("evaluate", "--model", str(data["model"]), "--data", str(data["train"]),
                "--shots", "0,3", "--report", str(report))
    assert r.returncode == 0, r.stderr
    n_held = len(read_npz(data["model"], FORMAT, VERSION)["heldout_digests"])
    assert f"{n_held} machines not used in training" in r.stderr
    for name in ("last value", "seasonal naive", "moving average", "linear AR",
                 "recent quantile", "meta-init", "meta-learned k=3", "joint k=3"):
        assert name in r.stdout, name
    assert "### Targets" in report.read_text()


def test_evaluate_a_dir_it_never_saw_needs_fit(data: dict[str, Path]) -> None:
    r = run_cli("evaluate", "--model", str(data["model"]), "--data", str(data["other"]))
    _one_line_error(r, "pass --fit DIR")
    r = run_cli("evaluate", "--model", str(data["model"]), "--data", str(data["other"]),
                "--fit", str(data["train"]), "--shots", "3")
    assert r.returncode == 0, r.stderr
    assert "4 machines not used in training" in r.stderr


def _one_line_error(r: subprocess.CompletedProcess[str], what: str) -> None:
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith("agora: error: ") and what in lines[-1], r.stderr
    assert "Traceback" not in r.stderr


def test_bad_forecaster_files(data: dict[str, Path], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(os.urandom(3000))
    _one_line_error(
        run_cli("evaluate", "--model", str(garbage), "--data", str(data["train"])),
        "not a forecaster export",
    )
    _one_line_error(
        run_cli("evaluate", "--model", str(tmp_path / "none.npz"), "--data", str(data["train"])),
        "no such forecaster file",
    )


def test_bad_data_and_options(data: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(
        run_cli("evaluate", "--model", str(data["model"]), "--data", str(empty)),
        "no usable series",
    )
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x").write_text("1 2\n3 4\nfoo 5\n")
    _one_line_error(run_cli("train", "--data", str(bad), "--out", str(tmp_path / "o.npz")), "x:3")
    _one_line_error(
        run_cli("train", "--data", str(data["train"]), "--out", str(tmp_path / "o.npz"),
                "--horizons", "3,1"),
        "horizons must be increasing",
    )
    _one_line_error(
        run_cli("train", "--data", str(data["train"]), "--out", str(tmp_path / "no" / "o.npz")),
        "does not exist",
    )

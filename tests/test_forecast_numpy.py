"""The torch-free numpy runtime equals the torch runtime; the shipped .npz equals the .pt."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn import checkpoint, model
from metalearn.data import Normalizer, load_bundle
from metalearn.errors import CheckpointError, ForecastError
from metalearn.numpy_runtime import (
    PARAM_NAMES,
    LastValueForecaster,
    NumpyForecaster,
    mse_grads,
    read_npz,
    write_npz,
)
from metalearn.runtime import Forecaster
from scenarios.sim.background import SHIPPED_TRACES

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_NPZ = ROOT / "metalearn" / "forecaster.npz"
RTOL = 1e-4  # relative, in original units (CPU %)


@pytest.fixture(scope="module")
def runtimes() -> tuple[NumpyForecaster, Forecaster]:
    return NumpyForecaster.load(), Forecaster.load()


@pytest.fixture(scope="module")
def traces() -> list[np.ndarray]:
    """12 real machines spread over the shipped gcd-vms bundle (always present)."""
    series = load_bundle(SHIPPED_TRACES["gcd-vms"])
    return [s.values for s in series[:: max(1, len(series) // 12)][:12]]


def _close(got: np.ndarray, want: np.ndarray) -> float:
    """Largest error relative to max(|want|, 1) (CPU %: values near 0 compared absolutely)."""
    return float(np.max(np.abs(got - want) / np.maximum(np.abs(want), 1.0)))


def test_param_names_match_model() -> None:
    assert PARAM_NAMES == model.PARAM_NAMES


@pytest.mark.parametrize("relative", [True, False])
def test_hand_written_gradients_equal_autograd(relative: bool) -> None:
    cfg = model.ModelConfig(window=5, horizon=3, hidden=7, relative=relative)
    init = [dict(model.build(cfg, seed=4).named_parameters())[n] for n in PARAM_NAMES]
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 5, generator=g), torch.randn(9, 3, generator=g)
    x, y = model.to_relative(x, y, cfg)
    leaves = [p.detach().double().requires_grad_(True) for p in init]
    loss = torch.nn.functional.mse_loss(model.functional_forward(leaves, x.double()), y.double())
    want = torch.autograd.grad(loss, leaves)
    got_loss, got = mse_grads([p.detach().double().numpy() for p in init], x.double().numpy(),
                              y.double().numpy())
    assert got_loss == pytest.approx(loss.item(), rel=1e-12)
    for a, b in zip(got, want, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("length", [0, 5, 17, 18, 19, 27, 60, 288])
def test_adapted_forecasts_equal_torch_runtime_on_real_traces(
    runtimes: tuple[NumpyForecaster, Forecaster], traces: list[np.ndarray], length: int
) -> None:
    nf, tf = runtimes
    assert (nf.window, nf.horizon, nf.shots, nf.inner_steps) == (
        tf.window, tf.horizon, tf.shots, tf.inner_steps)
    for v in traces:
        hist = v[:length]
        a, b = nf.adapt(hist), tf.adapt(hist)
        assert a.shots == b.shots == (0 if length < 18 else min(nf.shots, length - 17))
        for p, q in zip(a.params, b.params, strict=True):
            np.testing.assert_allclose(p, q.numpy(), rtol=0, atol=1e-5)
        windows = np.lib.stride_tricks.sliding_window_view(v, nf.window)
        assert _close(a.forecast_many(windows), b.forecast_many(windows)) < RTOL
        recent = v[max(0, length - nf.window):max(nf.window, length)]
        assert _close(a.forecast(recent), b.forecast(recent)) < RTOL


@pytest.mark.parametrize(("shots", "steps"), [(0, 3), (1, 3), (5, 1), (20, 3), (10, 0)])
def test_shots_and_steps_overrides_equal_torch(
    runtimes: tuple[NumpyForecaster, Forecaster], traces: list[np.ndarray], shots: int, steps: int
) -> None:
    nf, tf = runtimes
    for v in traces[:4]:
        a, b = nf.adapt(v[:100], shots=shots, steps=steps), tf.adapt(v[:100], shots=shots,
                                                                       steps=steps)
        assert a.shots == b.shots
        assert _close(a.forecast(v[88:100]), b.forecast(v[88:100])) < RTOL


def test_adaptation_changes_forecasts(
    runtimes: tuple[NumpyForecaster, Forecaster], traces: list[np.ndarray]
) -> None:
    """Guards the comparisons above against comparing two unadapted networks."""
    nf, _ = runtimes
    diffs = [np.max(np.abs(nf.adapt(v[:100]).forecast(v[88:100]) - nf.adapt([]).forecast(
        v[88:100]))) for v in traces]
    assert max(diffs) > 0.05
    assert nf.adapt([]).params is nf.params  # meta-initialization shared, not copied
    with pytest.raises(ValueError):
        nf.params[0][0, 0] = 1.0  # and read-only


def _tiny_checkpoint(tmp_path: Path, relative: bool, metasgd: bool) -> Path:
    cfg = model.ModelConfig(window=4, horizon=2, hidden=5, relative=relative)
    named = {n: t.detach() for n, t in model.build(cfg, seed=2).named_parameters()}
    g = torch.Generator().manual_seed(3)
    adapt: dict = {"inner_lr": 0.05, "inner_steps": 2, "shots": 3}
    if metasgd:
        adapt["inner_lrs"] = {n: torch.rand(t.shape, generator=g) * 0.1 for n, t in named.items()}
    body = {"config": cfg.to_dict(), "normalizer": {"mean": 30.0, "std": 12.0},
            "adapt": adapt, "meta_params": named}
    checkpoint.save(body, tmp_path / "c.pt")
    return tmp_path / "c.pt"


@pytest.mark.parametrize(("relative", "metasgd"), [(False, False), (True, True)])
def test_export_of_other_checkpoints(tmp_path: Path, relative: bool, metasgd: bool) -> None:
    pt = _tiny_checkpoint(tmp_path, relative, metasgd)
    checkpoint.export_numpy(pt)  # default: next to the .pt
    nf, tf = NumpyForecaster.load(tmp_path / "c.npz"), Forecaster.load(pt)
    assert nf.relative is relative and nf.source_hash == checkpoint.load(pt)["hash"]
    hist = 30 + 12 * np.sin(np.arange(40) / 3.0)
    for n in (0, 6, 7, 40):
        a, b = nf.adapt(hist[:n]), tf.adapt(hist[:n])
        assert a.shots == b.shots
        assert _close(a.forecast(hist[-4:]), b.forecast(hist[-4:])) < RTOL
    assert a.shots == 3 and not np.allclose(a.params[0], nf.params[0])


def test_shipped_npz_matches_shipped_pt(tmp_path: Path) -> None:
    body = checkpoint.load()  # the shipped .pt, hash verified
    arrays = read_npz(SHIPPED_NPZ)  # hash verified
    assert str(arrays["source_hash"]) == body["hash"]
    for n in PARAM_NAMES:
        assert np.array_equal(arrays[f"param.{n}"], body["meta_params"][n].numpy())
        assert np.array_equal(arrays[f"lr.{n}"], body["adapt"]["inner_lrs"][n].numpy())
    assert float(arrays["mean"]) == body["normalizer"]["mean"]
    assert float(arrays["std"]) == body["normalizer"]["std"]
    for k in ("window", "horizon", "hidden", "relative"):
        assert arrays[k].item() == body["config"][k]
    for k in ("inner_steps", "shots"):
        assert arrays[k].item() == body["adapt"][k]
    # and re-exporting the shipped checkpoint gives the shipped file, byte for byte
    checkpoint.export_numpy(checkpoint.DEFAULT_PATH, tmp_path / "again.npz")
    assert (tmp_path / "again.npz").read_bytes() == SHIPPED_NPZ.read_bytes()


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ForecastError, match="no such forecaster file"):
        NumpyForecaster.load(tmp_path / "missing.npz")
    good = SHIPPED_NPZ.read_bytes()
    for name, data in [("garbage.npz", b"\x00garbage" * 50), ("empty.npz", b""),
                       ("trunc.npz", good[: len(good) // 2])]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ForecastError, match="not a forecaster export"):
            NumpyForecaster.load(tmp_path / name)
    # one flipped byte inside a weight: the zip CRC or the content hash catches it
    i = good.index(b"param.hidden.weight.npy") + 400
    (tmp_path / "flipped.npz").write_bytes(good[:i] + bytes([good[i] ^ 1]) + good[i + 1:])
    with pytest.raises(CheckpointError, match="not a forecaster export|hash mismatch"):
        NumpyForecaster.load(tmp_path / "flipped.npz")

    arrays = {k: v for k, v in read_npz(SHIPPED_NPZ).items()
              if k not in ("format", "version", "hash")}
    edited = dict(arrays)
    edited["param.out.bias"] = arrays["param.out.bias"] + np.float32(1)
    write_npz(edited, tmp_path / "edited.npz")
    with zipfile.ZipFile(tmp_path / "edited.npz") as zf:  # keep the original hash
        members = {n: zf.read(n) for n in zf.namelist()}
    with zipfile.ZipFile(SHIPPED_NPZ) as zf:
        members["hash.npy"] = zf.read("hash.npy")
    with zipfile.ZipFile(tmp_path / "edited.npz", "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)
    with pytest.raises(CheckpointError, match="hash mismatch"):
        NumpyForecaster.load(tmp_path / "edited.npz")

    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="format is not"):
        NumpyForecaster.load(tmp_path / "other.npz")
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(CheckpointError, match="not a forecaster export"):
        NumpyForecaster.load(tmp_path / "single.npy")
    write_npz({k: v for k, v in arrays.items() if k != "lr.skip.bias"}, tmp_path / "part.npz")
    with pytest.raises(CheckpointError, match="missing 'lr.skip.bias'"):
        NumpyForecaster.load(tmp_path / "part.npz")
    write_npz(dict(arrays, window=np.asarray(11)), tmp_path / "shape.npz")
    with pytest.raises(CheckpointError, match=r"hidden.weight is .* expected float \(32, 11\)"):
        NumpyForecaster.load(tmp_path / "shape.npz")


def test_input_errors(runtimes: tuple[NumpyForecaster, Forecaster]) -> None:
    nf, _ = runtimes
    node = nf.adapt(np.full(40, 20.0))
    with pytest.raises(ForecastError, match="forecast needs the last 12 values, got 5"):
        node.forecast([1.0] * 5)
    with pytest.raises(ForecastError, match="forecast: contains NaN"):
        node.forecast([1.0] * 11 + [float("nan")])
    with pytest.raises(ForecastError, match="adapt: history: contains NaN or infinite"):
        nf.adapt([1.0] * 30 + [float("inf")])
    with pytest.raises(ForecastError, match="values must be numbers"):
        nf.adapt(["a"] * 30)
    with pytest.raises(ForecastError, match=r"shape \(n, 12\)"):
        node.forecast_many(np.zeros((2, 5)))
    # only the last `window` values of a longer recent history are used
    v = 20 + 5 * np.cos(np.arange(30))
    assert np.array_equal(node.forecast(v), node.forecast(v[-12:]))


def test_last_value_forecaster() -> None:
    lv = LastValueForecaster(horizon=4)
    node = lv.adapt([1.0, 2.0, 3.0])
    assert node.shots == 0 and list(node.forecast([5.0, 7.5])) == [7.5] * 4
    with pytest.raises(ForecastError):
        node.forecast([])
    with pytest.raises(ForecastError):
        lv.adapt([float("nan")])


def test_agent_path_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import agent.forecast_tracker\n"
        "from metalearn.numpy_runtime import NumpyForecaster\n"
        "fc = NumpyForecaster.load()\n"
        "h = [20.0 + (i % 7) for i in range(60)]\n"
        "print(fc.adapt(h).forecast(h[-fc.window:]).shape)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'learn2learn'))\n"
        "assert not bad, bad\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(6,)"


def test_normalizer_units_roundtrip() -> None:
    """The export's normalizer is the checkpoint's (Normalizer fields, same values)."""
    body = checkpoint.load()
    nf = NumpyForecaster.load()
    assert Normalizer(nf.mean, nf.std) == Normalizer(**body["normalizer"])


def test_train_writes_the_export_next_to_the_checkpoint(tmp_path: Path, capsys) -> None:
    from metalearn import cli

    rng = np.random.default_rng(0)
    (tmp_path / "vms").mkdir()
    for i in range(8):
        v = np.clip(30 + np.cumsum(rng.normal(0, 2, 80)), 1, 99)
        (tmp_path / "vms" / f"vm_{i}").write_text("".join(f"{a:.3f} 0\n" for a in v))
    pt = tmp_path / "m.pt"
    assert cli.main(["forecast", "train", "--data", str(tmp_path / "vms"), "--out", str(pt),
                     "--epochs", "1", "--shots", "3", "--window", "6", "--horizon", "2",
                     "--hidden", "8", "--meta-batch", "4", "--holdout", "0.3"]) == 0
    assert f"wrote {tmp_path / 'm.npz'} (torch-free export" in capsys.readouterr().out
    nf = NumpyForecaster.load(tmp_path / "m.npz")
    assert nf.source_hash == checkpoint.load(pt)["hash"]
    assert (nf.window, nf.horizon, nf.shots) == (6, 2, 3)

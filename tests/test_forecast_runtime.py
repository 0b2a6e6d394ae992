"""Runtime adaptation equals learn2learn's MAML clone().adapt(); checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metalearn import checkpoint
from metalearn.data import Normalizer
from metalearn.errors import CheckpointError
from metalearn.model import PARAM_NAMES, ModelConfig, build, functional_forward, to_relative
from metalearn.runtime import Forecaster, inner_loop

CFG = ModelConfig(window=4, horizon=2, hidden=5)


def _attr(obj: object, dotted: str) -> torch.Tensor:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def _data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, CFG.window, generator=g), torch.randn(n, CFG.horizon, generator=g)


def test_functional_forward_matches_module() -> None:
    net = build(CFG, seed=3)
    x, _ = _data(7)
    params = [dict(net.named_parameters())[n] for n in PARAM_NAMES]
    assert list(net.parameters()) == params  # the order the runtime relies on
    assert torch.allclose(net(x), functional_forward(params, x), atol=1e-6)


def test_learn2learn_one_maml_step_runs() -> None:
    import learn2learn as l2l

    net = build(CFG, seed=0)
    maml = l2l.algorithms.MAML(net, lr=0.1, first_order=False)
    x, y = _data(8)
    learner = maml.clone()
    before = [p.detach().clone() for p in learner.parameters()]
    learner.adapt(torch.nn.functional.mse_loss(learner(x), y))
    loss = torch.nn.functional.mse_loss(learner(x), y)
    loss.backward()
    after = list(learner.parameters())
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, after, strict=True))
    assert all(p.grad is not None for p in maml.parameters())  # meta-gradient reaches init


@pytest.mark.parametrize(("steps", "lr", "first_order"), [(1, 0.1, False), (3, 0.05, True)])
def test_runtime_adapt_equals_learn2learn(steps: int, lr: float, first_order: bool) -> None:
    import learn2learn as l2l

    net = build(CFG, seed=1)
    maml = l2l.algorithms.MAML(net, lr=lr, first_order=first_order)
    # a history whose complete windows are exactly the support set
    k = 6
    hist = torch.randn(CFG.window + CFG.horizon + k - 1, generator=torch.Generator().manual_seed(2))
    w = hist.unfold(0, CFG.window + CFG.horizon, 1)
    x, y = w[:, : CFG.window], w[:, CFG.window:]
    learner = maml.clone()
    for _ in range(steps):
        learner.adapt(torch.nn.functional.mse_loss(learner(x), y))
    # adapted tensors are plain attributes of the clone's module, not registered parameters
    want = [_attr(learner.module, n).detach() for n in PARAM_NAMES]

    init = [dict(net.named_parameters())[n] for n in PARAM_NAMES]
    got = inner_loop(init, x, y, steps, lr)
    fc = Forecaster(CFG, init, Normalizer(0.0, 1.0), inner_lr=lr, inner_steps=steps, shots=k)
    node = fc.adapt(hist.numpy())
    assert node.shots == k
    for a, b, c in zip(want, got, node.params, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(a, c, atol=1e-6)
    assert not torch.allclose(want[0], init[0])  # adaptation moved the parameters
    # the shared meta-initialization is untouched by adapting nodes
    assert all(torch.equal(p, q.detach()) for p, q in zip(fc.params, init, strict=True))


@pytest.mark.parametrize(("steps", "relative"), [(1, False), (3, True)])
def test_runtime_adapt_equals_learn2learn_metasgd(steps: int, relative: bool) -> None:
    import learn2learn as l2l

    cfg = ModelConfig(CFG.window, CFG.horizon, CFG.hidden, relative=relative)
    net = build(cfg, seed=1)
    msgd = l2l.algorithms.MetaSGD(net, lr=0.05, first_order=True)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # distinct per-element lrs, as after meta-training
        for lr in msgd.lrs:
            lr.mul_(torch.rand(lr.shape, generator=g) * 2)
    k = 6
    hist = torch.randn(cfg.window + cfg.horizon + k - 1, generator=torch.Generator().manual_seed(2))
    w = hist.unfold(0, cfg.window + cfg.horizon, 1)
    x, y = to_relative(w[:, : cfg.window], w[:, cfg.window:], cfg)
    learner = msgd.clone()
    for _ in range(steps):
        learner.adapt(torch.nn.functional.mse_loss(learner(x), y))
    want = [_attr(learner.module, n).detach() for n in PARAM_NAMES]

    init = [dict(net.named_parameters())[n] for n in PARAM_NAMES]
    lrs = [t.detach() for t in msgd.lrs]  # same order as PARAM_NAMES
    fc = Forecaster(cfg, init, Normalizer(0.0, 1.0), inner_lr=lrs, inner_steps=steps, shots=k)
    node = fc.adapt(hist.numpy())
    for a, b, c in zip(want, inner_loop(init, x, y, steps, lrs), node.params, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
        assert torch.allclose(a, c, atol=1e-6)
    assert not torch.allclose(want[0], init[0])
    # forecasts add the window's mean back (relative) or not (absolute)
    last = hist[-cfg.window:]
    z = functional_forward(node.params, to_relative(last[None], None, cfg)[0])
    z = z + (last.mean() if relative else 0.0)
    assert np.allclose(node.forecast(last.numpy()), z.detach().numpy()[0], atol=1e-5)


def test_checkpoint_lrs_reach_runtime(tmp_path: Path) -> None:
    net = build(CFG, seed=0)
    named = {n: t.detach() for n, t in net.named_parameters()}
    lrs = {n: torch.full_like(t, 0.5) for n, t in named.items()}
    body = {
        "config": CFG.to_dict(), "normalizer": {"mean": 0.0, "std": 1.0},
        "adapt": {"inner_lr": 0.01, "inner_steps": 2, "shots": 3, "inner_lrs": lrs},
        "meta_params": named,
        "baselines": {"joint_params": named, "joint_finetune_lr": 0.003},
    }
    checkpoint.save(body, tmp_path / "c.pt")
    fc = Forecaster.from_checkpoint(checkpoint.load(tmp_path / "c.pt"))
    assert all(torch.equal(a, lrs[n]) for a, n in zip(fc.inner_lr, PARAM_NAMES, strict=True))
    assert Forecaster.from_checkpoint(body, "joint_params").inner_lr == 0.003


def test_forecast_units_and_short_history() -> None:
    net = build(CFG, seed=1)
    init = [dict(net.named_parameters())[n] for n in PARAM_NAMES]
    fc = Forecaster(CFG, init, Normalizer(20.0, 10.0), inner_lr=0.05, inner_steps=2, shots=3)
    node = fc.adapt([30.0, 31.0])  # too short to adapt: meta-initialization as is
    assert node.shots == 0 and node.params is fc.params
    window = np.array([10.0, 20.0, 30.0, 40.0])
    want = functional_forward(init, torch.tensor((window - 20.0) / 10.0, dtype=torch.float32)[None])
    assert np.allclose(node.forecast(window), want.detach().numpy()[0] * 10 + 20, atol=1e-5)
    with pytest.raises(Exception, match="needs the last 4 values"):
        node.forecast([1.0, 2.0])


def _payload() -> dict:
    net = build(CFG, seed=0)
    return {"config": CFG.to_dict(), "meta_params": dict(net.named_parameters()), "x": [1, 2.5]}


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "c.pt"
    digest = checkpoint.save(_payload(), p)
    body = checkpoint.load(p)
    assert body["hash"] == digest and body["version"] == checkpoint.VERSION
    assert body["x"] == [1, 2.5]
    for n, t in _payload()["meta_params"].items():
        assert torch.equal(body["meta_params"][n], t.detach())


def test_checkpoint_errors(tmp_path: Path) -> None:
    p = tmp_path / "c.pt"
    checkpoint.save(_payload(), p)
    body = torch.load(p, weights_only=True)

    old = dict(body, version=99)
    old["hash"] = checkpoint.content_hash(old)
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        checkpoint.load(tmp_path / "old.pt")

    edited = dict(body, x=[1, 3.0])
    torch.save(edited, tmp_path / "edited.pt")
    with pytest.raises(CheckpointError, match="hash mismatch"):
        checkpoint.load(tmp_path / "edited.pt")

    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a forecaster checkpoint"):
        checkpoint.load(tmp_path / "other.pt")

    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 50)
    with pytest.raises(CheckpointError, match="not a forecaster checkpoint"):
        checkpoint.load(tmp_path / "garbage.pt")

    (tmp_path / "trunc.pt").write_bytes(p.read_bytes()[:200])
    with pytest.raises(CheckpointError):
        checkpoint.load(tmp_path / "trunc.pt")

    with pytest.raises(CheckpointError, match="no such checkpoint"):
        checkpoint.load(tmp_path / "missing.pt")

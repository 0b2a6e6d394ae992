"""A broken install (torch, torchvision or the learn2learn build) must fail CI here, early."""

import torch


def test_learn2learn_imports_and_runs_one_maml_step():
    import learn2learn as l2l

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    maml = l2l.algorithms.MAML(model, lr=0.1)
    learner = maml.clone()
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    before = learner.module.weight.detach().clone()
    learner.adapt(torch.nn.functional.mse_loss(learner(x), y))
    assert not torch.equal(before, learner.module.weight.detach())
    # the meta-parameters are untouched until the outer step
    assert torch.equal(model.weight.detach(), before)

"""MAML with torch.func: the inner loop is plain gradient descent, the meta-gradient is the exact second-order one
(checked against hand-written autograd with create_graph), first-order drops exactly the second derivatives."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apps.dmer.maml import adapt, adaptable, call, meta_loss
from common.errors import ConfigError


def _loss(model, params, batch):
    x, y = batch
    return ((call(model, params, x) - y) ** 2).mean()


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    tasks = [{"support": (torch.randn(4, 3), torch.randn(4, 1)), "query": (torch.randn(6, 3), torch.randn(6, 1))}
             for _ in range(2)]  # fmt: skip
    return model, tasks


def _manual_meta_grad(model, tasks, steps, lr, first_order):
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    total = 0.0
    for task in tasks:
        fast = params
        for _ in range(steps):
            loss = _loss(model, dict(zip(names, fast)), task["support"])
            grads = torch.autograd.grad(loss, fast, create_graph=not first_order)
            fast = [p - lr * g for p, g in zip(fast, grads)]
        total = total + _loss(model, dict(zip(names, fast)), task["query"])
    return torch.autograd.grad(total / len(tasks), params)


def test_inner_loop_is_gradient_descent_on_the_support():
    model, tasks = _setup()
    params = dict(model.named_parameters())
    one = adapt(model, params, _loss, tasks[0]["support"], steps=1, lr=0.1)
    grads = torch.autograd.grad(_loss(model, params, tasks[0]["support"]), list(params.values()))
    for (name, p), g in zip(params.items(), grads):
        assert torch.allclose(one[name], p - 0.1 * g, atol=1e-6)
    before = _loss(model, params, tasks[0]["support"]).item()
    after = _loss(model, adapt(model, params, _loss, tasks[0]["support"], steps=5, lr=0.1), tasks[0]["support"]).item()
    assert after < before


def test_inner_loop_runs_without_cudnn():
    """torch.func.grad's tensors have no storage: cuDNN's LSTM (flatten_parameters) fails on them on a GPU."""
    model, tasks = _setup()
    seen, before = [], torch.backends.cudnn.enabled

    def loss(model, params, batch):
        seen.append(torch.backends.cudnn.enabled)
        return _loss(model, params, batch)

    adapt(model, dict(model.named_parameters()), loss, tasks[0]["support"], steps=2, lr=0.1)
    assert seen == [False, False]
    assert torch.backends.cudnn.enabled == before  # restored after


def test_meta_gradient_matches_autograd_second_and_first_order():
    for first_order in (False, True):
        model, tasks = _setup()
        expected = _manual_meta_grad(model, tasks, steps=3, lr=0.2, first_order=first_order)
        model.zero_grad()
        meta_loss(model, tasks, _loss, steps=3, lr=0.2, first_order=first_order).backward()
        for p, g in zip(model.parameters(), expected):
            assert torch.allclose(p.grad, g, atol=1e-6), first_order
    model, tasks = _setup()
    second = _manual_meta_grad(model, tasks, 3, 0.2, False)
    first = _manual_meta_grad(model, tasks, 3, 0.2, True)
    assert any(not torch.allclose(a, b, atol=1e-5) for a, b in zip(second, first))  # the Hessian terms matter here


@pytest.mark.parametrize("prefix", ["", "head."])
def test_personalisation_steps_descend_the_eval_mode_loss(prefix):
    """The test's adaptation runs in eval mode: one inner step is exactly one gradient step of the loss the adapted
    model is scored under (BatchNorm on the training set's statistics, no dropout), not of one piece's batch
    statistics, which rescale its key features; with `adapt_prefix`, of the parameters it names only."""
    from functools import partial

    from apps.dmer.model import DSAML
    from apps.dmer.module import DMERModule

    torch.manual_seed(0)
    model = DSAML(chroma=True, n_mels=16, window_frames=9, clip_frames=12, steps=12, dim=16, num_heads=2,
                  ffn_dim=16, lstm_hidden=8, head_hidden=8, clip_channels=8, local_width=2, global_width=5)  # fmt: skip
    windows, clip = model.example_inputs()
    model(windows * 1.5, clip)  # train mode: running statistics away from their start
    module = DMERModule(model, optimizer=partial(torch.optim.Adam), adapt_steps=1, inner_lr=0.1, adapt_prefix=prefix)
    support = (windows[:1], clip[:1], torch.rand(1, 12, 2) * 2 - 1)
    adapted = module.adapted_params(support)
    model.eval()
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(module.loss(model, None, support), list(params.values()))
    assert sorted(adapted) == sorted(n for n in params if n.startswith(prefix)) and len(adapted) > 0
    for (name, p), g in zip(params.items(), grads):
        if name.startswith(prefix):
            assert torch.allclose(adapted[name], p - 0.1 * g, atol=1e-5), name
    with pytest.raises(ConfigError, match="adapt_prefix"):
        DMERModule(model, optimizer=partial(torch.optim.Adam), adapt_prefix="nothing.")


def test_prefix_adapts_only_those_parameters_and_the_others_get_their_plain_gradient():
    """meta_loss with a prefix ("2." = the last Linear): the inner loop moves only those parameters; the meta-gradient
    equals autograd's with the first layer held fixed in the inner loop (second order: exact)."""
    model, tasks = _setup()
    steps, lr = 3, 0.2
    names = [n for n, _ in model.named_parameters()]
    adapted = [n.startswith("2.") for n in names]
    params = list(model.parameters())
    total = 0.0
    for task in tasks:
        fast = params
        for _ in range(steps):
            loss = _loss(model, dict(zip(names, fast)), task["support"])
            grads = torch.autograd.grad(loss, [p for p, a in zip(fast, adapted) if a], create_graph=True)
            it = iter(grads)
            fast = [p - lr * next(it) if a else p for p, a in zip(fast, adapted)]
        total = total + _loss(model, dict(zip(names, fast)), task["query"])
    expected = torch.autograd.grad(total / len(tasks), params)
    model.zero_grad()
    meta_loss(model, tasks, _loss, steps=steps, lr=lr, prefix="2.").backward()
    for p, g in zip(model.parameters(), expected):
        assert torch.allclose(p.grad, g, atol=1e-6)
    one = adapt(model, adaptable(model, "2."), _loss, tasks[0]["support"], steps=2, lr=lr)
    assert sorted(one) == ["2.bias", "2.weight"]

"""Structural re-parameterisation: the deploy form computes the same function (eval mode, fp32, max abs
diff <= 1e-5), has fewer parameters, runs faster (same process, same input, median of interleaved
repeats), is reached idempotently, and can be built directly (`deploy=True`) to load its weights."""

from __future__ import annotations

import copy
import statistics
import time

import pytest
import torch

from apps.fmvit.model import build_fmvit, create
from apps.fmvit.rep import ConvBN, RepConv1x1, RepConvKxK

ATOL = 1e-5  # fp32: the folded convs sum the same products in a different order
# The 12-block `t` variant with randomised BatchNorms has logits up to ~9, where fp32 rounding alone is
# ~1e-6 per op; for it the bound is relative to the largest logit (measured 1.2e-5 abs at 8.8: 1.4e-6 rel).


def _randomize_bn(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics and affines, so folding them is actually tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)
    return model.eval()


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("make", "cin"),
    [
        (lambda: ConvBN(6, 8, 3, stride=2), 6),
        (lambda: RepConv1x1(8, 12, groups=(1, 2, 4), pre_norm=True), 8),
        (lambda: RepConv1x1(8, 12, groups=(1, 4)), 8),
        (lambda: RepConvKxK(8, 3, groups=2), 8),
        (lambda: RepConvKxK(8, 5, groups=8), 8),
    ],
)
def test_each_primitive_folds_exactly(make, cin):
    layer = _randomize_bn(make())
    x = torch.randn(3, cin, 9, 7)
    with torch.no_grad():
        want = layer(x)
        layer.reparameterize()
        got = layer(x)
    assert layer.deploy and (got - want).abs().max().item() <= ATOL
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in layer.modules())


@pytest.mark.parametrize(("variant", "size", "chans", "relative"), [("cpu", 28, 1, False), ("t", 32, 3, True)])
def test_model_deploy_form_is_equivalent_and_smaller(variant, size, chans, relative):
    torch.manual_seed(0)
    train_form = _randomize_bn(build_fmvit(variant, num_classes=10, in_chans=chans, img_size=size))
    deploy = copy.deepcopy(train_form).reparameterize()
    x = torch.randn(8, chans, size, size)
    with torch.no_grad():
        want, got = train_form(x), deploy(x)
    scale = max(1.0, want.abs().max().item()) if relative else 1.0
    assert (got - want).abs().max().item() <= ATOL * scale
    assert _n_params(deploy) < _n_params(train_form)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in deploy.stages.modules())

    # idempotent: a second call changes nothing
    state = {k: v.clone() for k, v in deploy.state_dict().items()}
    deploy.reparameterize()
    assert state.keys() == deploy.state_dict().keys()
    assert all(torch.equal(v, deploy.state_dict()[k]) for k, v in state.items())

    # the deploy form can be built directly and takes the folded weights (what an export's load() does)
    direct = build_fmvit(variant, num_classes=10, in_chans=chans, img_size=size, deploy=True).eval()
    direct.load_state_dict(deploy.state_dict())
    with torch.no_grad():
        assert torch.equal(direct(x), got)


def test_wrapper_reparameterizes_its_net():
    model = create("cpu", num_classes=10, in_chans=1, img_size=28).eval()
    assert model.reparameterize() is model and model.net.deploy


def test_deploy_form_is_faster():
    """Median wall time of interleaved forward passes, batch 64 at 28x28 (fmvit_cpu), one thread (conftest)."""
    train_form = build_fmvit("cpu", num_classes=10, in_chans=1, img_size=28).eval()
    deploy = copy.deepcopy(train_form).reparameterize()
    x = torch.randn(64, 1, 28, 28)
    times = {"train": [], "deploy": []}
    with torch.no_grad():
        for model in (train_form, deploy):  # warm-up
            model(x)
        for _ in range(7):
            for name, model in (("train", train_form), ("deploy", deploy)):
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    train_ms, deploy_ms = (statistics.median(times[k]) * 1e3 for k in ("train", "deploy"))
    assert deploy_ms < train_ms, (train_ms, deploy_ms)

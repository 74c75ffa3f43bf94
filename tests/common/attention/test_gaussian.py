"""GAAM (Gaussian adaptive attention): the Gaussian weighting, its axis, mean offsets, mask, gradients."""

import math

import pytest
import torch

from common.attention import build
from common.attention.gaussian import GaussianAdaptiveAttention
from common.errors import ConfigError
from tests.common.attention.helpers_c import (
    TOL,
    assert_mask_honoured,
    assert_shape_and_grads,
    make_input,
    padding_mask,
)

DIM, HEADS = 16, 4


def _gaam(**options) -> GaussianAdaptiveAttention:
    torch.manual_seed(0)
    module = build("gaussian", DIM, HEADS, **options).double().eval()
    with torch.no_grad():  # move off the symmetric initial point so every parameter matters
        module.mean_offsets.uniform_(-0.5, 0.5)
        module.c.uniform_(0.8, 2.0)
        module.mixture_logits.normal_()
    return module


@pytest.mark.parametrize("axis", ["tokens", "features"])
def test_shapes_and_gradients(axis):
    x = make_input(c=DIM)
    assert_shape_and_grads(_gaam(axis=axis, num_gaussians=2), x)
    assert_shape_and_grads(_gaam(axis=axis), x, mask=padding_mask(2, 10, [10, 4]))


@pytest.mark.parametrize("axis", ["tokens", "features"])
def test_official_single_head_formula(axis):
    """One head, one Gaussian: out = x * g / sum_axis g, g = exp(-((x - (mean + delta)) / std)^2 / (2 c^2))."""
    module = build("gaussian", 6, 1, axis=axis, proj=False).double()
    with torch.no_grad():
        module.mean_offsets.fill_(0.3)
        module.c.fill_(1.5)
    x = make_input(2, 7, 6)
    dim = 1 if axis == "tokens" else 2
    mean, var = x.mean(dim, keepdim=True), x.var(dim, keepdim=True) + module.eps
    g = torch.exp(-(((x - (mean + 0.3)) / var.sqrt()) ** 2) / (2 * 1.5**2))
    torch.testing.assert_close(module(x), x * g / g.sum(dim, keepdim=True), **TOL)


def test_weights_are_distributions_along_the_axis():
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 6])
    tokens = _gaam(axis="tokens").gaussian_weights(x, mask)  # [B, N, H, D]
    torch.testing.assert_close(tokens.sum(1), torch.ones(2, HEADS, DIM // HEADS, dtype=torch.float64), **TOL)
    assert (tokens[1, 6:] == 0).all()
    features = _gaam(axis="features").gaussian_weights(x)
    torch.testing.assert_close(features.sum(-1), torch.ones(2, 10, HEADS, dtype=torch.float64), **TOL)


def test_peak_sits_at_mean_plus_offset():
    """The largest weight goes to the token whose value is nearest `mean + delta`, so delta moves the focus."""
    module = build("gaussian", 1, 1, proj=False).double()
    x = torch.linspace(-2, 2, 9, dtype=torch.float64).view(1, 9, 1)  # mean 0
    for delta, peak in [(0.0, 4), (1.0, 6), (-1.5, 1)]:
        with torch.no_grad():
            module.mean_offsets.fill_(delta)
        assert int(module.gaussian_weights(x).flatten().argmax()) == peak
    # a larger variance scale c flattens the weights
    with torch.no_grad():
        module.mean_offsets.zero_()
        module.c.fill_(0.5)
        sharp = module.gaussian_weights(x).flatten()
        module.c.fill_(5.0)
        flat = module.gaussian_weights(x).flatten()
    assert sharp.max() > flat.max() and flat.max() - flat.min() < 0.1 * (sharp.max() - sharp.min())


def test_features_axis_mixes_no_tokens():
    module = _gaam(axis="features")
    x = make_input(c=DIM)
    x2 = x.clone()
    x2[:, 5:] += 1.0
    torch.testing.assert_close(module(x)[:, :5], module(x2)[:, :5], **TOL)
    assert not torch.allclose(_gaam(axis="tokens")(x)[:, :5], _gaam(axis="tokens")(x2)[:, :5])


def test_mask_honoured():
    assert_mask_honoured(_gaam(), make_input(c=DIM), padding_mask(2, 10, [7, 10]))


def test_gradcheck():
    module = build("gaussian", 8, 2, num_gaussians=2).double()
    with torch.no_grad():
        module.mean_offsets.uniform_(-0.5, 0.5)
    x = make_input(1, 5, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(t, mask=padding_mask(1, 5, [4])), (x,))


def test_bad_options():
    with pytest.raises(ConfigError):
        GaussianAdaptiveAttention(DIM, HEADS, axis="time")
    with pytest.raises(ConfigError):
        GaussianAdaptiveAttention(DIM, HEADS, init_c=0.0)
    assert math.isclose(GaussianAdaptiveAttention(DIM, HEADS).c.detach()[0, 0].item(), 2.0)

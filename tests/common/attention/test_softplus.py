"""Softplus attention (LSSA / LSSAR): rows sum to one, the length scale and the re-weighting as specified,
masks, causality."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from common.attention import build, capabilities
from common.attention.softplus import SoftplusAttention, softplus_attention_weights
from common.errors import ConfigError
from tests.common.attention.helpers_b import (
    assert_finite_grads,
    assert_finite_when_rows_see_nothing,
    assert_mask_honoured,
    assert_never_looks_ahead,
    padding_mask,
)

DIM, HEADS, N = 16, 2, 9


def make(**kwargs):
    torch.manual_seed(0)
    return SoftplusAttention(DIM, HEADS, **kwargs).double()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("reweight_power", [None, 4.0])
@pytest.mark.parametrize("masked", [False, True])
def test_rows_sum_to_one(causal, reweight_power, masked):
    module = make(causal=causal, reweight_power=reweight_power)
    x = 3 * torch.randn(2, N, DIM, dtype=torch.float64)
    mask = padding_mask(2, N, [N, 4]) if masked else None
    weights, _ = module.attention_weights(x, mask)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, N, dtype=torch.float64))
    assert (weights >= 0).all()
    if causal:
        assert torch.triu(weights, diagonal=1).abs().max() == 0
    if masked:
        assert weights[1, :, :, 4:].abs().max() == 0


def test_length_scale_and_reweighting_formulas():
    logits = torch.randn(2, 6, 6, dtype=torch.float64)
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()
    base = 3.0
    lssa = softplus_attention_weights(logits, allowed, length_base=base)
    for i in range(6):
        scale = math.log(i + 1) / math.log(base)  # row i sees i + 1 keys
        row = F.softplus(scale * logits[:, i, : i + 1])
        torch.testing.assert_close(lssa[:, i, : i + 1], row / row.sum(-1, keepdim=True))
    # at n = base the scale is 1: plain softplus + l1 normalisation
    full = softplus_attention_weights(logits, None, length_base=6.0)
    torch.testing.assert_close(full, F.softplus(logits) / F.softplus(logits).sum(-1, keepdim=True))
    # re-weighting: power then renormalise
    lssar = softplus_attention_weights(logits, allowed, length_base=base, reweight_power=3.0)
    torch.testing.assert_close(lssar, lssa**3 / (lssa**3).sum(-1, keepdim=True))


def test_reweighting_sharpens():
    logits = torch.randn(4, 12, 12, dtype=torch.float64)

    def entropy(w):
        return -(w * w.clamp(min=1e-300).log()).sum(-1).mean()

    plain = softplus_attention_weights(logits, None, length_base=8.0)
    sharp = softplus_attention_weights(logits, None, length_base=8.0, reweight_power=4.0)
    assert entropy(sharp) < entropy(plain)
    assert (sharp.amax(-1) >= plain.amax(-1) - 1e-12).all()  # the largest weight only grows
    assert torch.equal(sharp.argmax(-1), plain.argmax(-1))


def test_large_power_stays_finite_with_grads():
    module = make(causal=True, reweight_power=60.0)
    x = (5 * torch.randn(2, N, DIM, dtype=torch.float64)).requires_grad_(True)
    out = module(x, mask=padding_mask(2, N, [N, 5]).flip(-1))
    assert torch.isfinite(out).all()
    assert_finite_grads(module, out, x)


@pytest.mark.parametrize("causal", [False, True])
def test_shapes_grads_and_mask(causal):
    module = make(causal=causal, reweight_power=2.0)
    x = torch.randn(2, N, DIM, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == (2, N, DIM)
    assert_finite_grads(module, out, x)
    mask = padding_mask(2, N, [N, 5])
    assert_mask_honoured(module, x.detach(), mask.flip(-1) if causal else mask)


def test_causal_queries_without_keys_stay_finite():
    assert_finite_when_rows_see_nothing(
        make(causal=True, reweight_power=3.0), torch.randn(2, N, DIM, dtype=torch.float64)
    )


def test_causal_never_looks_ahead():
    assert_never_looks_ahead(make(causal=True), torch.randn(2, N, DIM, dtype=torch.float64), t=3)


def test_registry_and_config():
    caps = capabilities("softplus")
    assert caps.causal and caps.mask and caps.cost == "N^2" and caps.token_mixer
    module = build("softplus", DIM, HEADS, causal=True, reweight_power=3)
    assert module.causal and module.length_base == DIM // HEADS
    with pytest.raises(ConfigError):
        SoftplusAttention(DIM, HEADS, length_base=1.0)
    with pytest.raises(ConfigError):
        SoftplusAttention(DIM, HEADS, reweight_power=0)

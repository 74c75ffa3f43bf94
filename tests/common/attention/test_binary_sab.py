"""Softmax-aware binarisation (BiViT): the binary map keeps exactly the keys at or above the threshold,
the straight-through gradient is the softmax's, masks and causality hold."""

from __future__ import annotations

import pytest
import torch

from common.attention import build, capabilities
from common.attention.binary_sab import BinarySoftmaxAttention, binarize_sign, softmax_aware_binarize
from common.errors import ConfigError
from tests.common.attention.helpers_b import (
    assert_finite_grads,
    assert_finite_when_rows_see_nothing,
    assert_mask_honoured,
    assert_never_looks_ahead,
    padding_mask,
)

DIM, HEADS, N = 16, 2, 10


def make(**kwargs):
    torch.manual_seed(0)
    return BinarySoftmaxAttention(DIM, HEADS, **kwargs).double()


def x_input(batch=2, requires_grad=False):
    # larger inputs give peaked softmax rows, so the threshold cuts somewhere inside each row
    return (3 * torch.randn(batch, N, DIM, dtype=torch.float64)).requires_grad_(requires_grad)


@pytest.mark.parametrize("ratio", [0.25, 0.6, 1.0])
def test_binary_map_is_exactly_probs_at_or_above_threshold(ratio):
    module = make(threshold_ratio=ratio)
    attn, binary, probs, threshold, _ = module.attention_maps(x_input())
    torch.testing.assert_close(threshold, ratio * probs.amax(-1, keepdim=True), rtol=0, atol=0)
    assert torch.equal(binary, (probs >= threshold).to(binary.dtype))
    assert set(binary.unique().tolist()) <= {0.0, 1.0}
    assert (binary.sum(-1) >= 1).all()  # the row maximum is always kept
    # forward value of the STE map is the binary map itself
    torch.testing.assert_close(attn, binary, rtol=0, atol=1e-12)
    kept = binary.mean().item()
    assert 0 < kept < 1, "the threshold should cut inside rows for this test to mean something"


def test_forward_is_binary_map_times_values():
    module = make()
    x = x_input()
    with torch.no_grad():
        _, binary, _, _, v = module.attention_maps(x)
        expected = module.proj((binary @ v).transpose(1, 2).reshape(2, N, DIM))
        torch.testing.assert_close(module(x), expected)
        normalized = make(normalize=True)
        _, binary, _, _, v = normalized.attention_maps(x)
        expected = normalized.proj(((binary / binary.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(2, N, DIM))
        torch.testing.assert_close(normalized(x), expected)


def test_straight_through_gradient_is_the_softmax_gradient():
    logits = torch.randn(3, 5, 7, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(3, 5, 7, dtype=torch.float64)
    attn, _, _, _ = softmax_aware_binarize(logits)
    (grad_ste,) = torch.autograd.grad((attn * upstream).sum(), logits)
    (grad_softmax,) = torch.autograd.grad((logits.softmax(-1) * upstream).sum(), logits)
    torch.testing.assert_close(grad_ste, grad_softmax)
    assert torch.isfinite(grad_ste).all() and grad_ste.abs().sum() > 0


@pytest.mark.parametrize("binarize_qkv", [False, True])
def test_shapes_and_finite_nonzero_grads(binarize_qkv):
    module = make(binarize_qkv=binarize_qkv)
    x = x_input(requires_grad=True)
    out = module(x)
    assert out.shape == (2, N, DIM)
    assert_finite_grads(module, out, x)
    assert x.grad.abs().sum() > 0 and module.qkv.weight.grad.abs().sum() > 0


def test_sign_ste_is_clipped_identity():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.3, 1.5], dtype=torch.float64, requires_grad=True)
    y = binarize_sign(x)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_mask_keys_never_kept_and_honoured():
    module = make()
    x, mask = x_input(), padding_mask(2, N, [N, 6])
    _, binary, _, _, _ = module.attention_maps(x, mask)
    assert binary[1, :, :, 6:].abs().max() == 0
    assert_mask_honoured(module, x, mask)


def test_causal_queries_without_keys_stay_finite():
    assert_finite_when_rows_see_nothing(make(causal=True), torch.randn(2, N, DIM, dtype=torch.float64))


def test_causal_never_looks_ahead():
    module = make(causal=True)
    x = x_input()
    _, binary, _, _, _ = module.attention_maps(x)
    assert torch.triu(binary, diagonal=1).abs().max() == 0
    assert_never_looks_ahead(module, x, t=4)


def test_registry_and_config():
    caps = capabilities("binary_sab")
    assert caps.causal and caps.mask and caps.token_mixer and caps.cost == "N^2"
    assert build("binary_sab", DIM, HEADS, causal=True).causal
    with pytest.raises(ConfigError):
        BinarySoftmaxAttention(DIM, HEADS, threshold_ratio=0.0)
    with pytest.raises(ConfigError):
        BinarySoftmaxAttention(DIM, 3)

"""Softmax attention: SDPA and explicit paths agree with a hand-written softmax(QK^T/sqrt(d) + bias) V."""

import pytest
import torch

from common.attention import build
from common.attention.softmax import SoftmaxAttention, softmax_attention
from common.errors import ConfigError

DIM, HEADS = 16, 4


def _softmax(**options) -> SoftmaxAttention:
    torch.manual_seed(0)
    return build("softmax", DIM, HEADS, **options).double().eval()


def _manual(module: SoftmaxAttention, x, context=None, mask=None, bias=None, causal=False):
    """Hand-written multi-head attention with the module's weights: softmax(QK^T/sqrt(d) + bias) V."""
    ctx = x if context is None else context
    b, n, m = x.shape[0], x.shape[1], ctx.shape[1]
    q = module.q(x).reshape(b, n, HEADS, -1).transpose(1, 2)
    k, v = (t.reshape(b, m, HEADS, -1).transpose(1, 2) for t in module.kv(ctx).chunk(2, dim=-1))
    logits = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if bias is not None:
        logits = logits + bias
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
    if causal:
        logits = logits.masked_fill(~torch.ones(n, m, dtype=torch.bool).tril(), float("-inf"))
    weights = logits.softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(b, n, DIM)
    return module.proj(out), weights


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("with_bias", [False, True])
def test_matches_manual_attention(x64, checks, causal, with_mask, with_bias):
    module = _softmax(causal=causal)
    b, n, _ = x64.shape
    mask = checks.padding_mask(b, n) if with_mask else None
    bias = torch.randn(b, HEADS, n, n, dtype=torch.float64) if with_bias else None
    expected, expected_w = _manual(module, x64, mask=mask, bias=bias, causal=causal)
    with torch.no_grad():
        fused = module(x64, mask=mask, bias=bias)
        explicit, weights = module(x64, mask=mask, bias=bias, return_weights=True)
    torch.testing.assert_close(fused, expected, **checks.TOL)
    torch.testing.assert_close(explicit, expected, **checks.TOL)
    torch.testing.assert_close(weights, expected_w, **checks.TOL)
    torch.testing.assert_close(weights.sum(-1), torch.ones(b, HEADS, n, dtype=torch.float64), **checks.TOL)


def test_cross_attention_matches_manual(x64, checks):
    module = _softmax()
    context = torch.randn(2, 7, DIM, dtype=torch.float64)
    mask = checks.padding_mask(2, 7)
    expected, _ = _manual(module, x64, context=context, mask=mask)
    with torch.no_grad():
        torch.testing.assert_close(module(x64, mask=mask, context=context), expected, **checks.TOL)
    # masked context tokens change nothing
    context2 = context.clone()
    context2[~mask] = torch.randn_like(context2[~mask])
    with torch.no_grad():
        torch.testing.assert_close(module(x64, mask=mask, context=context2), expected, **checks.TOL)


def test_context_dim_and_shapes_and_grads(x64, checks):
    module = build("softmax", DIM, HEADS, context_dim=5).double()
    context = torch.randn(2, 3, 5, dtype=torch.float64)
    checks.shapes_and_grads(module, x64, context=context)


@pytest.mark.parametrize("options", [{}, {"causal": True}])
def test_shapes_and_grads(x64, checks, options):
    module = _softmax(**options).train()
    bias = torch.randn(1, HEADS, 11, 11, dtype=torch.float64, requires_grad=True)  # broadcast over batch
    checks.shapes_and_grads(module, x64, mask=checks.padding_mask(2, 11), bias=bias)
    assert bias.grad is not None and torch.isfinite(bias.grad).all()


def test_mask_honoured(x64, checks):
    checks.mask(_softmax(), x64, checks.padding_mask(2, 11))
    checks.mask(_softmax(causal=True), x64, checks.padding_mask(2, 11, left=True))  # right padding: vacuous


def test_causal_never_looks_ahead(x64, checks):
    module = _softmax(causal=True)
    for t in (0, 4, 9):
        checks.causal(module, x64, t)
        checks.causal(module, x64, t, return_weights=True)


def test_rows_without_keys_give_zeros_not_nan():
    q, k, v = torch.randn(3, 1, 2, 3, 4, dtype=torch.float64).unbind(0)
    mask = torch.tensor([[False, False, False]])
    bias = torch.zeros(1, 2, 3, 3, dtype=torch.float64)
    for kwargs in ({}, {"bias": bias}):
        fused = softmax_attention(q, k, v, mask=mask, **kwargs)
        explicit, weights = softmax_attention(q, k, v, mask=mask, return_weights=True, **kwargs)
        assert torch.equal(fused, torch.zeros_like(fused)) and torch.equal(explicit, torch.zeros_like(explicit))
        assert torch.equal(weights, torch.zeros_like(weights))


def test_minus_inf_in_bias_masks_like_the_mask():
    q, k, v = torch.randn(3, 2, 2, 5, 4, dtype=torch.float64).unbind(0)
    mask = torch.tensor([[True, True, False, True, False], [True] * 5])
    bias = torch.zeros(2, 1, 1, 5, dtype=torch.float64).masked_fill(~mask[:, None, None, :], float("-inf"))
    torch.testing.assert_close(softmax_attention(q, k, v, bias=bias), softmax_attention(q, k, v, mask=mask))


def test_gradcheck_functional():
    q, k, v = (torch.randn(1, 2, 3, 2, dtype=torch.float64, requires_grad=True) for _ in range(3))
    bias = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, False, True]])
    assert torch.autograd.gradcheck(lambda *a: softmax_attention(*a[:3], bias=a[3], mask=mask), (q, k, v, bias))
    assert torch.autograd.gradcheck(lambda *a: softmax_attention(*a, causal=True, return_weights=True)[0], (q, k, v))


def test_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        build("softmax", 10, 4)
    with pytest.raises(ValueError, match="causal"):
        _softmax(causal=True)(torch.randn(1, 3, DIM, dtype=torch.float64), context=torch.randn(1, 2, DIM))

"""Shared property checks for the tests of moh, kmeans_routing, mla, gaussian, inline and rcmha."""

from __future__ import annotations

import torch
from torch import nn

TOL = {"atol": 1e-10, "rtol": 1e-8}  # float64 equalities


def make_input(b: int = 2, n: int = 10, c: int = 16, seed: int = 0) -> torch.Tensor:
    """A seeded float64 input [B, N, C]."""
    return torch.randn(b, n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def padding_mask(b: int, n: int, real: list[int]) -> torch.Tensor:
    """Right-padding mask [B, N]: the first `real[i]` tokens of sample i are real."""
    return torch.arange(n)[None, :] < torch.tensor(real)[:, None]


def assert_shape_and_grads(module: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Output has x's shape; gradients reach x and every trainable parameter, all finite."""
    x = x.clone().requires_grad_(True)
    y = module(x, **kwargs)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
    return y


def assert_mask_honoured(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, **kwargs) -> None:
    """Changing padded tokens changes no real token's output, though without the mask it would."""
    noise = 5 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype)
    x2 = torch.where(mask[..., None], x, x + noise)
    with torch.no_grad():
        y1, y2 = module(x, mask=mask, **kwargs), module(x2, mask=mask, **kwargs)
        assert torch.isfinite(y1).all()
        torch.testing.assert_close(y1[mask], y2[mask], **TOL)
        unmasked1, unmasked2 = module(x, **kwargs), module(x2, **kwargs)
    assert not torch.allclose(unmasked1[mask], unmasked2[mask]), "the check could not fail: padded tokens never matter"


def assert_causal(module: nn.Module, x: torch.Tensor, t: int, **kwargs) -> None:
    """Perturbing tokens t.. leaves outputs ..t-1 unchanged (and does change outputs t..)."""
    x2 = x.clone()
    x2[:, t:] += torch.randn(x2[:, t:].shape, generator=torch.Generator().manual_seed(2), dtype=x.dtype)
    with torch.no_grad():
        y1, y2 = module(x, **kwargs), module(x2, **kwargs)
    torch.testing.assert_close(y1[:, :t], y2[:, :t], **TOL)
    assert not torch.allclose(y1[:, t:], y2[:, t:])


def looks_ahead(module: nn.Module, x: torch.Tensor, t: int, **kwargs) -> bool:
    """Whether perturbing tokens t.. changes some output before t (True for a non-causal mixer)."""
    x2 = x.clone()
    x2[:, t:] += 1.0
    with torch.no_grad():
        return not torch.allclose(module(x, **kwargs)[:, :t], module(x2, **kwargs)[:, :t])


def torch_mha(
    dim: int,
    num_heads: int,
    in_weight: torch.Tensor,
    in_bias: torch.Tensor | None,
    out_weight: torch.Tensor,
    out_bias: torch.Tensor | None,
) -> nn.MultiheadAttention:
    """torch's own nn.MultiheadAttention (float64, batch_first) loaded with the given projections."""
    mha = nn.MultiheadAttention(dim, num_heads, bias=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(in_weight)
        mha.in_proj_bias.copy_(torch.zeros(3 * dim, dtype=torch.float64) if in_bias is None else in_bias)
        mha.out_proj.weight.copy_(out_weight)
        mha.out_proj.bias.copy_(torch.zeros(dim, dtype=torch.float64) if out_bias is None else out_bias)
    return mha.eval()


def run_mha(mha: nn.MultiheadAttention, x: torch.Tensor, mask=None, causal: bool = False) -> torch.Tensor:
    """Self-attention through nn.MultiheadAttention with key padding (True = real) and causality."""
    n = x.shape[1]
    attn_mask = torch.ones(n, n, dtype=torch.bool).triu(1) if causal else None  # True = blocked
    key_padding = None if mask is None else ~mask
    with torch.no_grad():
        return mha(x, x, x, key_padding_mask=key_padding, attn_mask=attn_mask, need_weights=False)[0]

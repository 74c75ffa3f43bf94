"""Shared checks for the attention-mechanism tests (routing_bilevel, deformable_ms, binary_sab, agent, flow,
hedgehog, softplus)."""

from __future__ import annotations

import torch
from torch import nn


def assert_finite_grads(module: nn.Module, out: torch.Tensor, *inputs: torch.Tensor) -> None:
    """Backprop a random linear functional of `out`: parameter and input grads are finite, and not all zero."""
    (out * torch.randn_like(out)).sum().backward()
    grads = [p.grad for p in module.parameters() if p.requires_grad] + [t.grad for t in inputs]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "missing or non-finite gradient"
    assert sum(float(g.abs().sum()) for g in grads) > 0, "all gradients are zero"


def assert_mask_honoured(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, **kwargs) -> None:
    """Changing the masked-out tokens changes nothing at the real tokens (and would without the mask)."""
    x2 = x.clone()
    x2[~mask] = 5.0 * torch.randn_like(x2[~mask])
    with torch.no_grad():
        y1, y2 = module(x, mask=mask, **kwargs), module(x2, mask=mask, **kwargs)
        torch.testing.assert_close(y1[mask], y2[mask], rtol=1e-9, atol=1e-9)
        # the check can fail: without the mask the same change does reach the real tokens
        z1, z2 = module(x, **kwargs), module(x2, **kwargs)
        assert not torch.allclose(z1[mask], z2[mask], atol=1e-6)


def assert_never_looks_ahead(module: nn.Module, x: torch.Tensor, t: int, **kwargs) -> None:
    """Changing tokens after position t leaves outputs up to t unchanged (and does change later outputs)."""
    x2 = x.clone()
    x2[:, t + 1 :] = 5.0 * torch.randn_like(x2[:, t + 1 :])
    with torch.no_grad():
        y1, y2 = module(x, **kwargs), module(x2, **kwargs)
    torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :], atol=1e-6)


def padding_mask(batch: int, tokens: int, real: list[int]) -> torch.Tensor:
    """bool [B, N], True for the first real[b] tokens of row b."""
    return torch.arange(tokens)[None, :] < torch.tensor(real)[:, None]


def assert_finite_when_rows_see_nothing(module: nn.Module, x: torch.Tensor) -> None:
    """Causal module with left padding: padded queries see no key at all; outputs and grads stay finite."""
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    mask[-1, :3] = False  # the first three queries of the last row have no visible key
    x = x.detach().clone().requires_grad_(True)
    out = module(x, mask=mask)
    assert torch.isfinite(out).all()
    module.zero_grad()
    assert_finite_grads(module, out, x)

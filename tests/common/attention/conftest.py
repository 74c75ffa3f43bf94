"""Shared property checks for the attention tests, handed out as fixtures (conftest is not importable).

    def test_x(check_causal):
        check_causal(module, x)

Every check runs the module in float64 and eval mode; pass the module already built.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

TOL = dict(rtol=1e-9, atol=1e-10)


def _output(y):
    """The main output of a mixer that may return (output, extras...)."""
    return y[0] if isinstance(y, tuple) else y


def check_shapes_and_grads(module: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """The output has x's shape, and a random linear functional of it backprops finite grads everywhere."""
    x = x.detach().clone().requires_grad_(True)
    y = _output(module(x, **kwargs))
    assert y.shape == x.shape, f"output {tuple(y.shape)} != input {tuple(x.shape)}"
    assert torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in module.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, f"no gradient for {name}"
            assert torch.isfinite(p.grad).all(), f"non-finite gradient for {name}"
    return y


def check_causal(module: nn.Module, x: torch.Tensor, t: int | None = None, **kwargs) -> None:
    """Perturbing tokens t+1.. leaves outputs 0..t unchanged, and does change some later output."""
    t = x.shape[1] // 2 if t is None else t
    x2 = x.clone()
    x2[:, t + 1 :] = 3.0 * torch.randn_like(x2[:, t + 1 :])
    with torch.no_grad():
        y1, y2 = _output(module(x, **kwargs)), _output(module(x2, **kwargs))
    torch.testing.assert_close(y1[:, : t + 1], y2[:, : t + 1], **TOL)
    assert not torch.allclose(y1[:, t + 1 :], y2[:, t + 1 :])


def check_mask(module: nn.Module, x: torch.Tensor, mask: torch.Tensor, **kwargs) -> None:
    """Changing masked-out tokens changes nothing at the real tokens (while without the mask it would)."""
    x2 = x.clone()
    x2[~mask] = 3.0 * torch.randn_like(x2[~mask])
    with torch.no_grad():
        y1, y2 = _output(module(x, mask=mask, **kwargs)), _output(module(x2, mask=mask, **kwargs))
        torch.testing.assert_close(y1[mask], y2[mask], **TOL)
        z1, z2 = _output(module(x, **kwargs)), _output(module(x2, **kwargs))
    assert not torch.allclose(z1[mask], z2[mask]), "the check is vacuous: the change never reached real tokens"


def padding_mask(batch: int, n: int, lengths: list[int] | None = None, left: bool = False) -> torch.Tensor:
    """Key-padding mask [B, N], True = real token; default lengths n, n-3, n-4, ... (at least 1)."""
    lengths = lengths or [n] + [max(1, n - 2 - i) for i in range(1, batch)]
    pos = torch.arange(n)
    mask = torch.stack([pos < length for length in lengths])
    return mask.flip(-1) if left else mask


@pytest.fixture(autouse=True)
def _one_thread():
    """These tests use tiny tensors: one intra-op thread is faster, and kinder to a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def checks() -> SimpleNamespace:
    """The checks above: shapes_and_grads, causal, mask, padding_mask, TOL."""
    return SimpleNamespace(
        shapes_and_grads=check_shapes_and_grads,
        causal=check_causal,
        mask=check_mask,
        padding_mask=padding_mask,
        TOL=TOL,
    )


@pytest.fixture
def x64() -> torch.Tensor:
    """A seeded float64 input [B=2, N=11, C=16] (11: not a multiple of the small chunk sizes used)."""
    return torch.randn(2, 11, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

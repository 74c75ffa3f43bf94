"""XCiT cross-covariance attention: the d x d map per head, temperature, masks, shapes and gradients."""

import pytest
import torch
import torch.nn.functional as F

from common.attention import build
from common.attention.channel import ChannelAttention, cross_covariance_attention
from common.errors import ConfigError

DIM, HEADS = 16, 4


def _channel(**options) -> ChannelAttention:
    torch.manual_seed(0)
    module = build("channel", DIM, HEADS, **options).double().eval()
    with torch.no_grad():  # non-trivial per-head temperatures
        module.temperature.copy_(torch.tensor([0.5, 1.0, 2.0, 3.0])[:, None, None])
    return module


def test_matches_hand_written_xca(x64, checks):
    """XCiT's XCA: q, k, v as [B, H, d, N], L2-normalised along N, softmax(q k^T * t) v, then proj."""
    module = _channel()
    b, n, c = x64.shape
    qkv = module.qkv(x64).reshape(b, n, 3, HEADS, c // HEADS).permute(2, 0, 3, 1, 4)  # XCiT's reshape
    q, k, v = (t.transpose(-2, -1) for t in qkv)  # [B, H, d, N]
    attn = (F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)) * module.temperature
    out = (attn.softmax(dim=-1) @ v).permute(0, 3, 1, 2).reshape(b, n, c)
    with torch.no_grad():
        torch.testing.assert_close(module(x64), module.proj(out), **checks.TOL)


def test_map_is_d_by_d_and_rows_sum_to_one():
    q, k, v = torch.randn(3, 2, HEADS, 4, 50, dtype=torch.float64).unbind(0)
    out = cross_covariance_attention(q, k, v, torch.ones(HEADS, 1, 1, dtype=torch.float64))
    assert out.shape == (2, HEADS, 4, 50)
    # each row of the map sums to one, so all-ones values come back unchanged
    probe = torch.ones(2, HEADS, 4, 50, dtype=torch.float64)
    ones = cross_covariance_attention(q, k, probe, torch.ones(HEADS, 1, 1, dtype=torch.float64))
    torch.testing.assert_close(ones, probe)


def test_temperature_sharpens():
    """Higher temperature -> peakier d x d map (lower entropy), the learned knob of XCA."""
    q, k = torch.randn(2, 1, 1, 4, 30, dtype=torch.float64).unbind(0)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    entropies = []
    for t in (0.5, 2.0, 8.0):
        p = ((q @ k.transpose(-2, -1)) * t).softmax(dim=-1)
        entropies.append(float(-(p * p.log()).sum()))
    assert entropies[0] > entropies[1] > entropies[2]


def test_shapes_and_grads(x64, checks):
    y = checks.shapes_and_grads(_channel().train(), x64, mask=checks.padding_mask(2, 11))
    assert y.shape == x64.shape


def test_mask_honoured(x64, checks):
    checks.mask(_channel(), x64, checks.padding_mask(2, 11))


def test_masked_tokens_equal_dropping_them(checks):
    module = _channel()
    x = torch.randn(1, 9, DIM, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False, True, True, False, True]])
    with torch.no_grad():
        torch.testing.assert_close(module(x, mask=mask)[mask], module(x[mask][None])[0], **checks.TOL)


def test_gradcheck_functional():
    q, k, v = (torch.randn(1, 2, 2, 5, dtype=torch.float64, requires_grad=True) for _ in range(3))
    temperature = torch.tensor([[[0.7]], [[1.5]]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, False, True, True]])
    assert torch.autograd.gradcheck(lambda *a: cross_covariance_attention(*a, mask=mask), (q, k, v, temperature))


def test_errors():
    with pytest.raises(ConfigError, match="num_heads"):
        build("channel", 10, 4)

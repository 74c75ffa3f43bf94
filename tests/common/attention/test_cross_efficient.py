"""Efficient cross-attention (DAE-Former's skips): the explicit N x N form, DAE-Former's hand-written form,
which input feeds which role, masks, shapes and gradients."""

import pytest
import torch

from common.attention import build
from common.attention.cross_efficient import EfficientCrossAttention

DIM, VALUE_DIM = 16, 8


def _cross(num_heads=2, **options) -> EfficientCrossAttention:
    torch.manual_seed(0)
    return build("cross_efficient", DIM, num_heads, value_dim=VALUE_DIM, **options).double().eval()


def _pair(n=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, n, DIM, generator=g, dtype=torch.float64), torch.randn(
        2, n, VALUE_DIM, generator=g, dtype=torch.float64
    )


def test_equals_explicit_map(checks):
    """Per head: (softmax_C(X) softmax_N(X)^T) S, an N x N map from x applied to the source's values."""
    module = _cross(num_heads=2)
    x, s = _pair()
    xh, sh = x.unflatten(-1, (2, -1)).transpose(1, 2), s.unflatten(-1, (2, -1)).transpose(1, 2)
    attn = xh.softmax(dim=-1) @ xh.softmax(dim=-2).transpose(-2, -1)  # [B, H, N, N]
    expected = module.reprojection((attn @ sh).transpose(1, 2).flatten(2))
    with torch.no_grad():
        torch.testing.assert_close(module(x, s), expected, **checks.TOL)


def test_matches_dae_former_hand_written_form(checks):
    """DAE-Former's Cross_Attention, one head, channels-first: keys = queries = x2, values = x1,
    context = softmax_N(K) V^T, out = context^T softmax_C(Q), then the reprojection to 2 * value width."""
    module = _cross(num_heads=1)
    x, s = _pair()
    keys = x.transpose(1, 2).softmax(dim=2)
    queries = x.transpose(1, 2).softmax(dim=1)
    attended = (keys @ s).transpose(1, 2) @ queries  # [B, Dv, N]
    with torch.no_grad():
        out = module(x, s)
        torch.testing.assert_close(out, module.reprojection(attended.transpose(1, 2)), **checks.TOL)
    assert out.shape == (2, 11, 2 * VALUE_DIM)  # DAE-Former's default output width


def test_each_output_is_a_convex_mix_of_source_values():
    """Rows of the implied map are probability vectors: constant source values pass through unchanged."""
    module = _cross(num_heads=2)
    with torch.no_grad():
        module.reprojection.weight.copy_(torch.eye(2 * VALUE_DIM, VALUE_DIM, dtype=torch.float64))
        module.reprojection.bias.zero_()
    x, _ = _pair()
    s = torch.full((2, 11, VALUE_DIM), 3.0, dtype=torch.float64)
    with torch.no_grad():
        out = module(x, s)
    torch.testing.assert_close(out[..., :VALUE_DIM], s)


def test_source_reaches_every_token():
    """The context is global: changing the source at one token changes the output at every token."""
    module = _cross()
    x, s = _pair()
    s2 = s.clone()
    s2[:, 3] += 1.0
    with torch.no_grad():
        diff = (module(x, s2) - module(x, s)).abs().sum(-1)
    assert (diff > 0).all()


def test_shapes_and_grads_and_mask(checks):
    module = _cross().train()
    x, s = (t.requires_grad_(True) for t in _pair())
    mask = checks.padding_mask(2, 11)
    out = module(x, s, mask=mask)
    (out * torch.randn_like(out)).sum().backward()
    for t in (x, s, module.reprojection.weight):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0
    # masked tokens take no part in the context: changing them leaves the real tokens' outputs unchanged
    module.eval()
    x, s = _pair()
    x2, s2 = x.clone(), s.clone()
    x2[~mask], s2[~mask] = 5.0, -5.0
    with torch.no_grad():
        torch.testing.assert_close(module(x, s, mask=mask)[mask], module(x2, s2, mask=mask)[mask], **checks.TOL)


def test_errors():
    module = _cross()
    x, s = _pair()
    with pytest.raises(ValueError, match="source"):
        module(x, s[:, :5])
    with pytest.raises(ValueError, match="source"):
        module(x, x)  # width 16, not the value width 8

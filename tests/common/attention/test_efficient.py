"""Efficient Attention (Shen et al.): the linear form equals the explicit map, tokens/2-D/3-D layouts, masks."""

import pytest
import torch

from common.attention import build
from common.attention.efficient import EfficientAttention, efficient_attention
from common.errors import ConfigError

DIM = 16


def _efficient(num_heads=2, **options) -> EfficientAttention:
    torch.manual_seed(0)
    return build("efficient", DIM, num_heads, **options).double().eval()


def test_equals_explicit_map_per_head(checks):
    """rho_q(Q) (rho_k(K)^T V) = (rho_q(Q) rho_k(K)^T) V, with K softmaxed over tokens and Q over channels."""
    q, k = torch.randn(2, 2, 3, 9, 4, dtype=torch.float64).unbind(0)
    v = torch.randn(2, 3, 9, 5, dtype=torch.float64)
    explicit = (q.softmax(dim=-1) @ k.softmax(dim=-2).transpose(-2, -1)) @ v  # [B, H, N, N] map
    torch.testing.assert_close(efficient_attention(q, k, v), explicit, **checks.TOL)
    n = q.shape[-2]
    torch.testing.assert_close(efficient_attention(q, k, v, normalization="scaling"), (q @ k.transpose(-2, -1)) @ v / n)


def test_module_matches_hand_written_dae_former_form(x64, checks):
    """One head, as DAE-Former: keys softmax over N, queries over C, context = K V^T, out = context^T Q."""
    module = _efficient(num_heads=1)
    xt = x64.transpose(1, 2)  # [B, C, N] (DAE-Former's conv layout)
    keys = (module.keys.weight @ xt + module.keys.bias[:, None]).softmax(dim=2)
    queries = (module.queries.weight @ xt + module.queries.bias[:, None]).softmax(dim=1)
    values = module.values.weight @ xt + module.values.bias[:, None]
    attended = (keys @ values.transpose(1, 2)).transpose(1, 2) @ queries  # [B, Cv, N]
    expected = module.reprojection(attended.transpose(1, 2))
    with torch.no_grad():
        torch.testing.assert_close(module(x64), expected, **checks.TOL)


@pytest.mark.parametrize("num_heads", [1, 4])
def test_shapes_and_grads_tokens(x64, checks, num_heads):
    checks.shapes_and_grads(_efficient(num_heads).train(), x64, mask=checks.padding_mask(2, 11))


def test_layouts_2d_3d_and_channel_first(checks):
    module = _efficient()
    x2d = torch.randn(2, DIM, 3, 4, dtype=torch.float64)
    x3d = torch.randn(2, DIM, 2, 3, 2, dtype=torch.float64)
    for fmap in (x2d, x3d):
        tokens = fmap.flatten(2).transpose(1, 2)
        spatial = {"hw": fmap.shape[2:]} if fmap.ndim == 4 else {"dhw": fmap.shape[2:]}
        checks.shapes_and_grads(module, fmap)
        with torch.no_grad():
            y_map, y_tokens = module(fmap), module(tokens, **spatial)
        assert y_map.shape == fmap.shape
        torch.testing.assert_close(y_map.flatten(2).transpose(1, 2), y_tokens, **checks.TOL)


def test_mask_honoured(x64, checks):
    checks.mask(_efficient(), x64, checks.padding_mask(2, 11))
    checks.mask(_efficient(normalization="scaling"), x64, checks.padding_mask(2, 11))


def test_masked_keys_equal_dropping_them(checks):
    """With a mask, the real tokens' outputs equal running on the real tokens alone."""
    module = _efficient()
    x = torch.randn(1, 8, DIM, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, False, True, True, False]])
    with torch.no_grad():
        torch.testing.assert_close(module(x, mask=mask)[mask], module(x[mask][None])[0], **checks.TOL)


def test_gradcheck_functional():
    q, k, v = (torch.randn(1, 2, 4, 3, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, True, False, True]])
    for norm in ("softmax", "scaling"):
        assert torch.autograd.gradcheck(
            lambda *a, n=norm: efficient_attention(*a, mask=mask, normalization=n), (q, k, v)
        )


def test_errors(x64):
    with pytest.raises(ValueError, match="hw"):
        _efficient()(x64, hw=(3, 3))
    with pytest.raises(ConfigError, match="normalization"):
        build("efficient", DIM, 2, normalization="bogus")
    with pytest.raises(ConfigError, match="key_dim"):
        build("efficient", DIM, 3)

"""Offset attention (PCT): the equations against a per-element loop, column normalisation, permutation
equivariance, masks, gradients."""

from __future__ import annotations

import pytest
import torch

from common.attention import build, capabilities
from common.attention.offset import OffsetAttention
from common.errors import ConfigError

DIM, N = 16, 9


def make(heads=1, **kwargs):
    torch.manual_seed(0)
    module = OffsetAttention(DIM, heads, **kwargs).double().eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so eval mode is not the identity affine
        module.norm.running_mean.uniform_(-0.5, 0.5)
        module.norm.running_var.uniform_(0.5, 2.0)
    return module


def reference(module: OffsetAttention, x: torch.Tensor) -> torch.Tensor:
    """PCT's equations for one head, element by element (eval-mode BatchNorm as its affine map)."""
    b, n, c = x.shape
    q, k, v = module.q(x), module.k(x), module.v(x)
    out = torch.empty_like(x)
    for bi in range(b):
        e = torch.stack([torch.stack([q[bi, i] @ k[bi, j] for j in range(n)]) for i in range(n)])
        a = torch.exp(e - e.max(1, keepdim=True).values)
        a = a / a.sum(1, keepdim=True)  # softmax over keys j
        a = a / (1e-9 + a.sum(0, keepdim=True))  # then l1 over queries i
        for j in range(n):
            y = sum(a[i, j] * v[bi, i] for i in range(n))
            t = module.trans(x[bi, j] - y)
            bn = module.norm
            t = (t - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
            out[bi, j] = x[bi, j] + torch.relu(t)
    return out


def test_matches_the_equations(x64):
    module = make()
    with torch.no_grad():
        torch.testing.assert_close(module(x64), reference(module, x64), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("heads", [1, 2])
def test_columns_sum_to_one_and_weights_are_nonnegative(x64, heads):
    w = make(heads).weights(x64)
    assert w.shape == (2, heads, 11, 11) and (w >= 0).all()
    torch.testing.assert_close(w.sum(-2), torch.ones(2, heads, 11, dtype=torch.float64))


def test_permutation_equivariant(x64):
    """No positions: permuting the tokens permutes the output (the property that lets it run on point sets)."""
    module = make(2)
    perm = torch.randperm(11)
    with torch.no_grad():
        torch.testing.assert_close(module(x64[:, perm]), module(x64)[:, perm], rtol=1e-10, atol=1e-12)


def test_mask_hides_padded_tokens(x64, checks):
    module = make(2)
    checks.mask(module, x64, checks.padding_mask(2, 11))


def test_training_mode_batchnorm_ignores_padded_tokens(x64):
    """In training the BatchNorm statistics come from real tokens only: garbage in the padding changes nothing."""
    module = make().train()
    mask = torch.ones(2, 11, dtype=torch.bool)
    mask[1, 7:] = False
    x2 = x64.clone()
    x2[1, 7:] = 100 * torch.randn(4, DIM, dtype=torch.float64)
    torch.testing.assert_close(module(x64, mask)[mask], module(x2, mask)[mask], rtol=1e-10, atol=1e-12)


def test_shapes_and_gradients(x64, checks):
    checks.shapes_and_grads(make(2).train(), x64)


def test_registry_and_options():
    assert isinstance(build("offset", 32, 1), OffsetAttention)
    assert capabilities("offset").token_mixer is False and capabilities("offset").mask
    assert build("offset", 32, 2, qk_ratio=2).q.out_features == 16
    with pytest.raises(ConfigError) as err:
        build("offset", 16, 1, qk_ratio=0)
    assert err.value.key == "qk_ratio"
    with pytest.raises(ConfigError) as err:
        build("offset", 16, 8)  # 8 heads divide 16 but not the query width 4
    assert err.value.key == "num_heads" and "qk_dim=4" in err.value.expected

"""Performer FAVOR+: error to exact softmax falls with more features, orthogonal features, redraws, causality."""

import pytest
import torch
import torch.nn.functional as F

from common.attention import build
from common.attention.favor import FavorAttention, favor_attention, favor_features, orthogonal_random_features
from common.errors import ConfigError

DIM, HEADS = 16, 2


def _favor(**options) -> FavorAttention:
    torch.manual_seed(0)
    return build("favor", DIM, HEADS, **options).double().eval()


def _qkv(n=32, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (0.5 * torch.randn(2, 2, n, d, generator=g, dtype=torch.float64) for _ in range(2))
    return q, k, torch.randn(2, 2, n, d, generator=g, dtype=torch.float64)


def _projection(m, d=8, seed=0):
    return orthogonal_random_features(m, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("causal", [False, True])
def test_error_to_exact_softmax_falls_with_num_features(causal):
    """Mean relative error over 8 feature draws, q, k ~ N(0, 0.25 I), d = 8, N = 32.

    Measured (torch 2.14 CPU, float64), m = 4, 16, 64, 256 (1024): non-causal 0.51, 0.33, 0.19, 0.12 (0.052);
    causal 0.39, 0.22, 0.13, 0.072 (0.039) -- about 1/sqrt(m).
    """
    q, k, v = _qkv()
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    means = []
    for m in (4, 16, 64, 256):
        errors = [
            float((favor_attention(q, k, v, _projection(m, seed=s), causal=causal) - exact).norm() / exact.norm())
            for s in range(8)
        ]
        means.append(sum(errors) / len(errors))
    assert all(a > b for a, b in zip(means, means[1:])), means
    assert means[-1] < 0.2 and means[-1] < means[0] / 2.5, means


def test_features_estimate_the_softmax_kernel():
    """E[phi(x).phi(y)] = exp(x.y): with many features the estimate is close, and stabilisers cancel in ratios."""
    x, y = (0.2 * torch.randn(2, 1, 1, 1, 6, dtype=torch.float64)).unbind(0)
    w = _projection(6 * 2000, d=6)
    # without stabilisers: phi(x) = exp(Wx - |x|^2/2)/sqrt(m)
    raw = lambda t: torch.exp(t @ w.T - t.square().sum(-1, keepdim=True) / 2) / w.shape[0] ** 0.5  # noqa: E731
    estimate = (raw(x) * raw(y)).sum()
    torch.testing.assert_close(estimate, torch.exp((x * y).sum()), rtol=0.05, atol=0)
    # the stabilised features differ from the raw ones by one positive factor per query row / per key set
    ratio_q = favor_features(x, w, is_query=True) / raw(x)
    ratio_k = favor_features(y, w, is_query=False) / raw(y)
    torch.testing.assert_close(ratio_q / ratio_q.flatten()[0], torch.ones_like(ratio_q))
    torch.testing.assert_close(ratio_k / ratio_k.flatten()[0], torch.ones_like(ratio_k))


def test_orthogonal_random_features():
    w = _projection(20, d=8)
    assert w.shape == (20, 8)
    unit = w / w.norm(dim=1, keepdim=True)
    for block in (unit[:8], unit[8:16], unit[16:]):  # orthonormal rows within each block of d
        torch.testing.assert_close(block @ block.T, torch.eye(len(block), dtype=torch.float64))
    lengths = _projection(4000, d=8).norm(dim=1)  # chi(8): mean ~ 2.74
    assert 2.6 < float(lengths.mean()) < 2.9


@pytest.mark.parametrize("chunk_size", [1, 5, 32])
def test_causal_forms_agree(checks, chunk_size):
    q, k, v = _qkv(n=13)
    w = _projection(16)
    mask = checks.padding_mask(2, 13, left=True)
    ref = favor_attention(q, k, v, w, causal=True, mode="parallel", mask=mask)
    for mode in ("chunked", "recurrent"):
        out = favor_attention(q, k, v, w, causal=True, mode=mode, mask=mask, chunk_size=chunk_size)
        torch.testing.assert_close(out, ref, **checks.TOL)


def test_redraw_schedule(x64):
    module = _favor(redraw_interval=3).train()
    seen = [module.projection.clone()]
    for _ in range(7):
        module(x64)
        seen.append(module.projection.clone())
    changed = [not torch.equal(a, b) for a, b in zip(seen, seen[1:])]
    assert changed == [False, False, False, True, False, False, True]  # redraw before calls 4 and 7
    module.eval()
    before = module.projection.clone()
    for _ in range(5):
        module(x64)
    assert torch.equal(before, module.projection)  # no redraws in eval
    fixed = _favor(redraw_interval=0).train()
    before = fixed.projection.clone()
    for _ in range(5):
        fixed(x64)
    assert torch.equal(before, fixed.projection)
    assert "projection" in fixed.state_dict()


def test_num_features_default_and_option():
    assert _favor().projection.shape == (round(8 * torch.log(torch.tensor(8.0)).item()), 8)  # d ln d = 17
    assert _favor(num_features=40).projection.shape == (40, 8)


@pytest.mark.parametrize("causal", [False, True])
def test_shapes_and_grads(x64, checks, causal):
    module = _favor(causal=causal, chunk_size=4).train()
    checks.shapes_and_grads(module, x64, mask=checks.padding_mask(2, 11, left=causal))


@pytest.mark.parametrize("mode", ["parallel", "chunked", "recurrent"])
def test_causal_never_looks_ahead(x64, checks, mode):
    module = _favor(causal=True, mode=mode, chunk_size=4)
    for t in (0, 6):
        checks.causal(module, x64, t)


def test_mask_honoured(x64, checks):
    checks.mask(_favor(), x64, checks.padding_mask(2, 11))
    checks.mask(_favor(causal=True), x64, checks.padding_mask(2, 11, left=True))


def test_gradcheck_functional():
    q, k, v = (t[:1, :1, :5, :3].detach().clone().requires_grad_(True) for t in _qkv())
    w = _projection(6, d=3)
    mask = torch.tensor([[True, True, False, True, True]])
    for causal in (False, True):
        assert torch.autograd.gradcheck(
            lambda *a, c=causal: favor_attention(*a, w, causal=c, mask=mask, chunk_size=2), (q, k, v)
        )


def test_errors():
    with pytest.raises(ConfigError, match="num_features"):
        build("favor", DIM, HEADS, num_features=-1)
    with pytest.raises(ConfigError, match="mode"):
        build("favor", DIM, HEADS, mode="bogus")

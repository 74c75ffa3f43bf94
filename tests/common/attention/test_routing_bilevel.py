"""Bi-level routing attention: equals full attention with topk = all regions, brute-force routed attention,
padding for odd maps, the module contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.attention import build, capabilities
from common.attention.routing_bilevel import (
    BiLevelRoutingAttention,
    bilevel_routing_attention,
    bilevel_routing_attention_torch,
    route_regions,
)
from common.errors import ConfigError
from tests.common.attention.helpers_b import assert_finite_grads

DIM, HEADS = 8, 2


def make_module(n_win, topk, side_dwconv=5, qk_dim=None):
    torch.manual_seed(0)
    return BiLevelRoutingAttention(DIM, HEADS, n_win=n_win, topk=topk, qk_dim=qk_dim, side_dwconv=side_dwconv).double()


def full_attention_with_lce(module, x, hw):
    """Plain softmax attention over all tokens with the module's own projections, scale and LCE."""
    batch, height, width = x.shape[0], *hw
    x_map = x.view(batch, height, width, DIM)
    q, k, v = module.qkv(x_map).split([module.qk_dim, module.qk_dim, DIM], dim=-1)

    def heads(t):
        return t.reshape(batch, height * width, HEADS, -1).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), scale=module.qk_dim**-0.5)
    out = out.transpose(1, 2).reshape(batch, height, width, DIM)
    out = out + module.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return module.wo(out).reshape(batch, height * width, DIM)


@pytest.mark.parametrize(
    "hw, n_win",
    [
        ((4, 6), 2),  # divisible
        ((5, 7), 3),  # odd: padded to 6 x 9
        ((5, 5), 4),  # padded to 8 x 8 with a row and a column of regions that are all padding
    ],
)
def test_topk_all_regions_equals_full_attention(hw, n_win):
    module = make_module(n_win, topk=n_win * n_win, qk_dim=12)
    x = torch.randn(2, hw[0] * hw[1], DIM, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(module(x, hw=hw), full_attention_with_lce(module, x, hw))


def brute_force_routed(q, k, v, n_win, topk):
    """Per query token: region means over real tokens, affinity, top-k regions, then attention over the
    tokens of those regions (mask over the full map). Regions are ceil(H / S) x ceil(W / S) blocks."""
    batch, height, width, qk_dim = q.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    rows, cols = torch.arange(height)[:, None] // rh, torch.arange(width)[None, :] // rw
    region = (rows * n_win + cols).flatten()  # region id of every real token
    scale = qk_dim**-0.5
    out = torch.empty(batch, height * width, v.shape[-1], dtype=q.dtype)
    qf, kf, vf = q.flatten(1, 2), k.flatten(1, 2), v.flatten(1, 2)
    for b in range(batch):
        means_q = torch.stack(
            [
                qf[b][region == r].mean(0) if (region == r).any() else torch.zeros(qk_dim, dtype=q.dtype)
                for r in range(n_win**2)
            ]
        )
        means_k = torch.stack(
            [
                kf[b][region == r].mean(0) if (region == r).any() else torch.zeros(qk_dim, dtype=q.dtype)
                for r in range(n_win**2)
            ]
        )
        affinity = (means_q * scale) @ means_k.T
        affinity[:, torch.tensor([not (region == r).any() for r in range(n_win**2)])] = float("-inf")
        routed = affinity.topk(topk, dim=-1).indices
        for i in range(height * width):
            keys = torch.isin(region, routed[region[i]])
            for h in range(HEADS):
                cq, cv = qk_dim // HEADS, v.shape[-1] // HEADS
                logits = (qf[b, i, h * cq : (h + 1) * cq] * scale) @ kf[b, keys, h * cq : (h + 1) * cq].T
                out[b, i, h * cv : (h + 1) * cv] = logits.softmax(-1) @ vf[b, keys, h * cv : (h + 1) * cv]
    return out.view(batch, height, width, -1)


@pytest.mark.parametrize("hw, n_win, topk", [((4, 4), 2, 2), ((5, 7), 2, 1), ((6, 3), 3, 4)])
def test_routed_core_matches_brute_force(hw, n_win, topk):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, *hw, 6, generator=g, dtype=torch.float64)
    k = torch.randn(2, *hw, 6, generator=g, dtype=torch.float64)
    v = torch.randn(2, *hw, 4, generator=g, dtype=torch.float64)
    ours = bilevel_routing_attention_torch(q, k, v, HEADS, n_win, topk)
    torch.testing.assert_close(ours, brute_force_routed(q, k, v, n_win, topk))
    torch.testing.assert_close(bilevel_routing_attention(q, k, v, HEADS, n_win, topk, impl="torch"), ours)
    if topk < n_win * n_win:  # routing matters: fewer regions give a different answer
        assert not torch.allclose(ours, bilevel_routing_attention_torch(q, k, v, HEADS, n_win, n_win * n_win))


@pytest.mark.parametrize("hw, n_win", [((6, 6), 3), ((5, 7), 3), ((5, 5), 4)])
@pytest.mark.parametrize("scale", [0.25, -0.5])
def test_route_regions_fp32_ranks_as_the_reference(hw, n_win, scale):
    """The kernel's routing (fp32 region sums, scale dropped when positive) orders every region's full row as
    the reference's region means do in float64: a positive factor per row cannot change a ranking, and fp32
    rounding (~1e-6 relative) is far below the gaps between random affinities, so a difference is a changed
    ranking. Regions made only of padding come last."""
    g = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, *hw, 16, generator=g, dtype=torch.float64) for _ in range(2))
    regions = n_win * n_win
    exact = route_regions(q, k, n_win, regions, scale)
    assert torch.equal(route_regions(q.float(), k.float(), n_win, regions, scale, fp32=True), exact)
    real = [
        r
        for r in range(regions)
        if (r // n_win) * -(-hw[0] // n_win) < hw[0] and (r % n_win) * -(-hw[1] // n_win) < hw[1]
    ]
    assert sorted(exact[..., : len(real)].unique().tolist()) == real


def test_token_and_channel_last_inputs_agree_shapes_and_grads():
    module = make_module(n_win=3, topk=2)
    x = torch.randn(2, 5 * 7, DIM, dtype=torch.float64, requires_grad=True)
    out = module(x, hw=(5, 7))
    assert out.shape == (2, 35, DIM)
    with torch.no_grad():
        torch.testing.assert_close(module(x.view(2, 5, 7, DIM)), out.view(2, 5, 7, DIM))
    assert_finite_grads(module, out, x)


def test_lce_is_added():
    with_lce, without = make_module(2, 4), make_module(2, 4, side_dwconv=0)
    without.load_state_dict({k: v for k, v in with_lce.state_dict().items() if not k.startswith("lce")})
    x = torch.randn(1, 16, DIM, dtype=torch.float64)
    with torch.no_grad():
        v = with_lce.qkv(x.view(1, 4, 4, DIM))[..., -DIM:]
        lce = with_lce.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        expected = without(x, hw=(4, 4)) + (with_lce.wo(lce) - with_lce.wo.bias).reshape(1, 16, DIM)
        torch.testing.assert_close(with_lce(x, hw=(4, 4)), expected)


def test_errors_and_registry():
    module = make_module(2, 2)
    x = torch.randn(1, 12, DIM, dtype=torch.float64)
    with pytest.raises(ValueError):
        module(x)  # no hw
    with pytest.raises(ValueError):
        module(x, hw=(3, 5))
    with pytest.raises(ValueError):
        module(x, mask=torch.ones(1, 12, dtype=torch.bool), hw=(3, 4))
    with pytest.raises(ConfigError):
        BiLevelRoutingAttention(DIM, HEADS, n_win=2, topk=5)
    with pytest.raises(ConfigError):
        BiLevelRoutingAttention(DIM, HEADS, side_dwconv=4)
    caps = capabilities("routing_bilevel")
    assert caps.layout == "2d" and not caps.causal and not caps.mask and caps.token_mixer
    assert isinstance(build("routing_bilevel", DIM, HEADS, n_win=2, topk=1), BiLevelRoutingAttention)

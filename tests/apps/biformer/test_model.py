"""BiFormer through timm: every variant builds, has the paper's parameter count, and gives timm-style
forward_features / forward_head shapes; gradients reach every parameter; bad configs raise ConfigError;
a map that the regions do not divide gives, on its real tokens, exactly the routed attention computed
without any padding; the routing read-out gives valid region indices."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import apps.biformer  # noqa: F401  (registers the models)
from apps.biformer.model import BiFormer, BiFormerBlock, create
from apps.biformer.routing import last_block_routes
from common.errors import ConfigError

# (variant, paper's parameter count in millions at 1000 classes, last-stage width)
PAPER = [("tiny", 13.1, 512), ("small", 25.5, 512), ("base", 56.8, 768)]


@pytest.mark.parametrize("variant, params_m, width", PAPER)
def test_paper_variants(variant, params_m, width):
    with torch.device("meta"):  # counting needs no memory
        net = timm.create_model(f"biformer_{variant}", num_classes=1000)
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params_m, abs=0.05)
    # shapes with one block per stage (same stem, widths, heads, routing; depth does not change shapes)
    net = timm.create_model(f"biformer_{variant}", num_classes=10, depths=(1, 1, 1, 1))
    x = torch.randn(1, 3, 64, 64)  # stride 32 -> 2x2; the 7x7 routing pads the small maps
    with torch.no_grad():
        features = net.forward_features(x)
        assert features.shape == (1, width, 2, 2)
        assert net.forward_head(features, pre_logits=True).shape == (1, width)
        assert net.forward_head(features).shape == (1, 10)


@pytest.mark.parametrize(
    "variant, size, in_chans, kw", [("mini", 28, 1, {}), ("tiny", 32, 3, {"depths": (1, 1, 1, 1)})]
)
def test_gradients_reach_every_parameter(variant, size, in_chans, kw):
    net = timm.create_model(f"biformer_{variant}", num_classes=5, in_chans=in_chans, img_size=size, **kw)
    logits = net(torch.randn(2, in_chans, size, size))
    assert logits.shape == (2, 5)
    logits.square().sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]


def test_pipeline_wrapper_and_config_errors():
    model = create("mini", num_classes=10, in_chans=1, img_size=28, class_names=[str(i) for i in range(10)])
    (x,) = model.example_inputs()
    assert model(x).shape == (2, 10) and model.export_spec()["inputs"]["image"]["shape"] == ["N", 1, 28, 28]
    with pytest.raises(ConfigError, match="variant"):
        create("huge", num_classes=10, in_chans=1, img_size=28)
    with pytest.raises(ConfigError, match="topks"):
        BiFormer(depths=(1,), embed_dims=(32,), topks=(50,), n_win=7, head_dim=16)
    with pytest.raises(ConfigError, match="head_dim"):
        BiFormer(depths=(1,), embed_dims=(40,), topks=(4,), head_dim=16)
    with pytest.raises(ConfigError, match="pretrained"):
        timm.create_model("biformer_tiny", pretrained=True)


def routed_attention_without_padding(attn, x_map: torch.Tensor) -> torch.Tensor:
    """What BRA means on a map its regions do not divide, computed on the H*W real tokens alone (nothing padded).

    A token's region is (row // rh) * S + col // rw with rh = ceil(H / S) (the region grid of the padded map);
    region q/k are means over real tokens; each region routes to its top-k regions among those holding real
    tokens (all of them when fewer); a query token attends to every real token of its routed regions.
    """
    batch, height, width, _ = x_map.shape
    s = attn.n_win
    rh, rw = -(-height // s), -(-width // s)
    q, k, v = attn.qkv(x_map).split([attn.qk_dim, attn.qk_dim, attn.dim], dim=-1)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    region = ((rows // rh) * s + cols // rw).flatten()
    present, member = region.unique(return_inverse=True)  # regions holding real tokens; token -> its index there
    onehot = F.one_hot(member, len(present)).to(q.dtype)  # [N, R]

    def mean(t):
        return onehot.T @ t.flatten(1, 2) / onehot.sum(0)[:, None]  # [B, R, C]

    affinity = (mean(q) * attn.scale) @ mean(k).transpose(-2, -1)
    routes = affinity.topk(min(attn.topk, len(present)), dim=-1).indices
    routed = torch.zeros(batch, len(present), len(present), dtype=torch.bool).scatter_(-1, routes, True)
    allowed = routed[:, member][:, :, member]  # [B, N, N]: query token i sees key token j

    def heads(t):
        return t.flatten(1, 2).unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)

    out = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), attn_mask=allowed[:, None], scale=attn.scale)
    out = out.transpose(1, 2).reshape(batch, height, width, attn.dim)
    return attn.wo(out + attn.lce(v.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


@pytest.mark.parametrize(
    "height, width, n_win, topk",
    [
        (7, 7, 4, 4),  # biformer_mini stage 1: 7x7 padded to 8x8, every region holds 1 to 4 real tokens
        (8, 8, 7, 4),  # biformer_tiny stage 2 at 64 px: padded to 14x14, 16 real regions, 33 of padding only
        (4, 4, 7, 16),  # tiny stage 3 at 64 px: top-16 of 49 must be exactly the 16 one-token real regions
        (5, 3, 4, 12),  # 9 real regions, top-12: three padding-only regions routed, they must add no keys
    ],
)
def test_padding_never_reaches_the_real_tokens(height, width, n_win, topk):
    """Padding is invisible: padded tokens are no keys and join no region mean, and a region made only of padding
    is never routed before a real one, so the block's attention equals the routed attention over real tokens.

    Tolerance 1e-5: both sides are float32 softmax attention over the same keys, summed in another order (a few
    ulps, ~1e-6, on outputs of order 1). Each way padding could leak, put into the core on purpose (zero-padded
    keys attended to, as the official `auto_pad`; padding in the region means; padding-only regions routed),
    made some case here differ by 0.14 to 0.46.
    """
    attn = BiFormerBlock(32, 2, n_win, topk).attn.eval()
    x_map = torch.randn(2, height, width, 32)
    with torch.no_grad():
        torch.testing.assert_close(attn(x_map), routed_attention_without_padding(attn, x_map), rtol=1e-5, atol=1e-5)


def test_routing_readout():
    net = timm.create_model("biformer_mini", num_classes=10, in_chans=1, img_size=28).eval()
    routes = last_block_routes(net, torch.randn(1, 1, 28, 28))
    assert sorted(routes) == [0, 1]  # the two routing stages; stage 3 is global attention
    r0, r1 = routes[0]["routes"], routes[1]["routes"]
    assert r0.shape == (16, 4) and r1.shape == (4, 2)  # 4x4 regions top-4, 2x2 regions top-2
    for r, n in ((r0, 16), (r1, 4)):
        assert int(r.min()) >= 0 and int(r.max()) < n
        assert all(len(set(row)) == len(row) for row in r.tolist())  # top-k picks distinct regions
    assert routes[0]["map"] == (7, 7)  # the stage's real map (the routing pads it to 8x8 internally)


def test_routing_readout_matches_the_core(monkeypatch):
    """The routes recomputed from q/k equal the ones the core's BRA takes (recorded from its top-k call)."""
    net = timm.create_model("biformer_mini", num_classes=10, in_chans=1, img_size=28).eval()
    block = net.stages[0][-1]
    x_map = torch.randn(2, 7, 7, 32)  # the padded 7x7 stage-1 map
    from apps.biformer.routing import routes_of_block

    ours = routes_of_block(block, x_map)
    recorded = []
    original = torch.Tensor.topk

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        recorded.append(out.indices)
        return out

    monkeypatch.setattr(torch.Tensor, "topk", spy)
    with torch.no_grad():
        block.attn(x_map)
    monkeypatch.undo()
    assert len(recorded) == 1 and torch.equal(recorded[0], ours)

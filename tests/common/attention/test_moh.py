"""MoH (mixture-of-head attention): routing, weighted heads, equivalence to MHA with every head active."""

import pytest
import torch

from common.attention import build
from common.attention.moh import MixtureOfHeadsAttention
from common.errors import ConfigError
from tests.common.attention.helpers_c import (
    TOL,
    assert_causal,
    assert_mask_honoured,
    assert_shape_and_grads,
    make_input,
    padding_mask,
    run_mha,
    torch_mha,
)

DIM, HEADS = 16, 8


def _moh(**options) -> MixtureOfHeadsAttention:
    torch.manual_seed(0)
    return build("moh", DIM, HEADS, **options).double().eval()


def test_shapes_gradients_and_balance_loss():
    module = _moh(shared_heads=2, routed_topk=3).train()
    x = make_input(c=DIM)
    assert_shape_and_grads(module, x, mask=padding_mask(2, 10, [10, 6]))
    assert module.aux_loss is not None and torch.isfinite(module.aux_loss)


def test_each_token_uses_shared_plus_topk_heads():
    module = _moh(shared_heads=2, routed_topk=3)
    gates = module.head_gates(make_input(c=DIM))
    assert gates.shape == (2, 10, HEADS)
    assert (gates[..., :2] > 0).all(), "shared heads are always active"
    assert ((gates[..., 2:] > 0).sum(-1) == 3).all(), "exactly top-k routed heads per token"
    # two-stage weights: shared gates sum to 2 * a_s, routed to 3 * a_r, with a_s + a_r = 2
    shared_w, routed_w = gates[..., :2].sum(-1) / 2, gates[..., 2:].sum(-1) / 3
    torch.testing.assert_close(shared_w + routed_w, torch.full_like(shared_w, 2.0), **TOL)


def test_inactive_head_does_not_reach_the_token():
    """A routed head a token did not select has no effect on that token's output (weighted sum, not concat)."""
    module = _moh(shared_heads=2, routed_topk=2)
    x = make_input(c=DIM)
    gates = module.head_gates(x)
    head = 5
    off = gates[..., head] == 0  # tokens that did not pick this head
    assert off.any() and (~off).any()
    y1 = module(x)
    with torch.no_grad():  # change that head's value projection only
        d = DIM // HEADS
        module.qkv.weight[2 * DIM + head * d : 2 * DIM + (head + 1) * d] += 1.0
    y2 = module(x)
    torch.testing.assert_close(y1[off], y2[off], **TOL)
    assert not torch.allclose(y1[~off], y2[~off])


@pytest.mark.parametrize("shared_heads", [0, 1, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_all_heads_with_uniform_router_equals_multi_head_attention(shared_heads, causal):
    module = _moh(shared_heads=shared_heads, all_heads=True, causal=causal)
    with torch.no_grad():  # uniform router -> every gate is exactly 1
        for router in (module.router, module.shared_router, module.balance_router):
            if router is not None:
                router.weight.zero_()
    assert torch.allclose(module.head_gates(make_input(c=DIM)), torch.ones((), dtype=torch.float64))
    mha = torch_mha(DIM, HEADS, module.qkv.weight, module.qkv.bias, module.proj.weight, module.proj.bias)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 7])
    torch.testing.assert_close(module(x), run_mha(mha, x, causal=causal), **TOL)
    torch.testing.assert_close(module(x, mask=mask)[mask], run_mha(mha, x, mask, causal)[mask], **TOL)


def test_mask_and_causality():
    x = make_input(c=DIM)
    assert_mask_honoured(_moh(), x, padding_mask(2, 10, [7, 10]))
    assert_causal(_moh(causal=True), x, t=6)
    assert_causal(_moh(causal=True), x, t=6, mask=padding_mask(2, 10, [10, 8]))


def test_bad_options():
    with pytest.raises(ConfigError):
        MixtureOfHeadsAttention(DIM, HEADS, shared_heads=6, routed_topk=3)
    with pytest.raises(ConfigError):
        MixtureOfHeadsAttention(DIM, HEADS, shared_heads=0, routed_topk=0)

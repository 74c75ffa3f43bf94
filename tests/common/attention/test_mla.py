"""MLA (multi-head latent attention): full rank = MHA, absorbed = naive, cached decoding = full pass."""

import pytest
import torch

from common.attention import build
from common.attention.mla import MultiHeadLatentAttention, _rotate
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

DIM, HEADS = 16, 4


def _mla(**options) -> MultiHeadLatentAttention:
    torch.manual_seed(0)
    return build("mla", DIM, HEADS, **options).double().eval()


def test_shapes_and_gradients():
    x = make_input(c=DIM)
    assert_shape_and_grads(_mla(), x)
    assert_shape_and_grads(_mla(q_rank=8, kv_rank=6, causal=True), x, mask=padding_mask(2, 10, [10, 5]))
    assert_shape_and_grads(_mla(q_rank=8, kv_rank=6), x, absorb=True)


@pytest.mark.parametrize("causal", [False, True])
def test_full_rank_latent_represents_multi_head_attention(causal):
    """TransMLA: with kv_rank = dim, identity down-projection and no rope part, MLA is any given MHA."""
    module = _mla(kv_rank=DIM, rope_dim=0, latent_norm=False, causal=causal)
    torch.manual_seed(1)
    w_q, w_k, w_v, w_o = (torch.randn(DIM, DIM, dtype=torch.float64) / 4 for _ in range(4))
    d = DIM // HEADS
    with torch.no_grad():
        module.q_proj.weight.copy_(w_q)
        module.kv_down.weight.copy_(torch.eye(DIM, dtype=torch.float64))
        per_head = torch.cat([w_k.view(HEADS, d, DIM), w_v.view(HEADS, d, DIM)], dim=1)  # [W_uk^h; W_uv^h]
        module.kv_up.weight.copy_(per_head.reshape(-1, DIM))
        module.proj.weight.copy_(w_o)
        module.proj.bias.zero_()
    mha = torch_mha(DIM, HEADS, torch.cat([w_q, w_k, w_v]), None, w_o, None)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 6])
    for absorb in (False, True):
        torch.testing.assert_close(module(x, absorb=absorb), run_mha(mha, x, causal=causal), **TOL)
        expected = run_mha(mha, x, mask, causal)[mask]
        torch.testing.assert_close(module(x, mask=mask, absorb=absorb)[mask], expected, **TOL)


@pytest.mark.parametrize("causal", [False, True])
def test_absorbed_path_equals_naive_path(causal):
    module = _mla(kv_rank=6, q_rank=8, rope_dim=4, causal=causal)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 7])
    with torch.no_grad():
        torch.testing.assert_close(module(x, absorb=True), module(x), **TOL)
        torch.testing.assert_close(module(x, mask=mask, absorb=True), module(x, mask=mask), **TOL)


@pytest.mark.parametrize("absorb", [False, True])
def test_cached_decoding_equals_full_causal_pass(absorb):
    module = _mla(kv_rank=6, rope_dim=4, causal=True)
    x = make_input(c=DIM)
    with torch.no_grad():
        full = module(x)
        y, state = module(x[:, :4], absorb=absorb, return_state=True)
        outputs = [y]
        for i in range(4, 10):  # one token at a time, then the cache holds every token
            y, state = module(x[:, i : i + 1], absorb=absorb, state=state, return_state=True)
            outputs.append(y)
    assert state[0].shape == (2, 10, 6) and state[1].shape == (2, 10, 4)
    torch.testing.assert_close(torch.cat(outputs, dim=1), full, **TOL)


def test_rope_scores_depend_on_relative_position_only():
    """q_i . k_j of the rotary part is a function of i - j: RoPE at (3, 1) equals RoPE at (7, 5)."""
    module = _mla(rope_dim=4)
    q, k = make_input(1, 1, 4, seed=3)[0], make_input(1, 1, 4, seed=4)[0]  # [1, 4]

    def score(i: int, j: int) -> torch.Tensor:
        cos_i, sin_i = module._rope_tables(i, 1, q)
        cos_j, sin_j = module._rope_tables(j, 1, k)
        return (_rotate(q, cos_i, sin_i) * _rotate(k, cos_j, sin_j)).sum()

    torch.testing.assert_close(score(3, 1), score(7, 5), **TOL)
    assert not torch.allclose(score(3, 1), score(3, 2))


def test_mask_and_causality():
    x = make_input(c=DIM)
    assert_mask_honoured(_mla(), x, padding_mask(2, 10, [6, 10]))
    assert_mask_honoured(_mla(), x, padding_mask(2, 10, [6, 10]), absorb=True)
    assert_causal(_mla(causal=True), x, t=5)
    assert_causal(_mla(causal=True), x, t=5, absorb=True)


def test_gradcheck_absorbed():
    module = build("mla", 8, 2, kv_rank=3, rope_dim=2, causal=True).double()
    x = make_input(1, 4, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(t, absorb=True), (x,))

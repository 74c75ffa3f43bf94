"""RCMHA: depth-wise convolutional q/k/v, relative positional scores, causal convolution, mask."""

import torch

from common.attention import build
from common.attention.rcmha import RelativeConvAttention
from tests.common.attention.helpers_c import (
    TOL,
    assert_causal,
    assert_mask_honoured,
    assert_shape_and_grads,
    looks_ahead,
    make_input,
    padding_mask,
    run_mha,
    torch_mha,
)

DIM, HEADS = 16, 4


def _rcmha(**options) -> RelativeConvAttention:
    torch.manual_seed(0)
    module = build("rcmha", DIM, HEADS, **options).double().eval()
    with torch.no_grad():  # the biases start at 0; move them so that they are exercised
        module.content_bias.normal_(0, 0.3)
        module.position_bias.normal_(0, 0.3)
    return module


def test_shapes_and_gradients():
    x = make_input(c=DIM)
    assert_shape_and_grads(_rcmha(), x)
    assert_shape_and_grads(_rcmha(causal=True, kernel_size=4), x, mask=padding_mask(2, 10, [10, 3]))


def test_without_convolution_and_positions_it_is_multi_head_attention():
    """kernel_size=1 is a per-channel scale and shift; with W_R = 0 and u = v = 0 what is left is plain MHA."""
    module = _rcmha(kernel_size=1)
    with torch.no_grad():
        module.pos_proj.weight.zero_()
        module.content_bias.zero_()
        module.position_bias.zero_()
    scale, shift = module.dwconv.weight.view(-1), module.dwconv.bias
    in_weight, in_bias = scale[:, None] * module.qkv.weight, scale * module.qkv.bias + shift
    mha = torch_mha(DIM, HEADS, in_weight, in_bias, module.proj.weight, module.proj.bias)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 6])
    torch.testing.assert_close(module(x), run_mha(mha, x), **TOL)
    causal = _rcmha(kernel_size=1, causal=True)
    causal.load_state_dict(module.state_dict())
    torch.testing.assert_close(causal(x, mask=mask)[mask], run_mha(mha, x, mask, causal=True)[mask], **TOL)


def test_position_term_depends_on_distance_only():
    """For equal queries at every position the position scores form a Toeplitz matrix in (i, j)."""
    module = _rcmha()
    q = make_input(1, 1, DIM // HEADS).expand(2, HEADS, 7, DIM // HEADS)  # the same query everywhere
    scores = module.relative_scores(q)  # [B, H, N, N]
    torch.testing.assert_close(scores[..., 1:, 1:], scores[..., :-1, :-1], **TOL)
    assert not torch.allclose(scores[..., 2, 1], scores[..., 1, 2])  # signed: i - j = 1 differs from -1


def test_positions_break_permutation_symmetry():
    """Plain MHA is permutation-equivariant; the relative term (even without convolution) is not."""
    module = _rcmha(kernel_size=1)
    x = make_input(1, 8, DIM)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert not torch.allclose(module(x[:, perm]), module(x)[:, perm])
        module.pos_proj.weight.zero_()
        module.position_bias.zero_()
        torch.testing.assert_close(module(x[:, perm]), module(x)[:, perm], **TOL)


def test_mask_and_causality():
    x = make_input(c=DIM)
    mask = padding_mask(2, 10, [6, 10])
    assert_mask_honoured(_rcmha(), x, mask)
    assert_mask_honoured(_rcmha(causal=True), x, mask.flip(1))  # left padding: causal tokens see the pads
    assert_causal(_rcmha(causal=True, kernel_size=3), x, t=5)
    assert_causal(_rcmha(causal=True, kernel_size=3), x, t=5, mask=padding_mask(2, 10, [10, 7]))
    assert looks_ahead(_rcmha(), x, t=5)


def test_gradcheck():
    module = build("rcmha", 8, 2, causal=True).double()
    x = make_input(1, 4, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(module, (x,))

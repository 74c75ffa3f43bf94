"""InLine attention: injective subtract-mean normalisation, linear-time form, local term, mask."""

import pytest
import torch
import torch.nn.functional as F

from common.attention import build
from common.attention.inline import InLineAttention, inline_attention, inline_weights
from common.errors import ConfigError
from tests.common.attention.helpers_c import (
    TOL,
    assert_mask_honoured,
    assert_shape_and_grads,
    make_input,
    padding_mask,
)

DIM, HEADS = 16, 4


def _inline(**options) -> InLineAttention:
    torch.manual_seed(0)
    return build("inline", DIM, HEADS, **options).double().eval()


@pytest.mark.parametrize("kernel", ["identity", "relu", "exp"])
def test_shapes_and_gradients(kernel):
    x = make_input(n=10, c=DIM)
    assert_shape_and_grads(_inline(kernel=kernel), x)
    assert_shape_and_grads(_inline(kernel=kernel), x, mask=padding_mask(2, 10, [10, 7]))
    assert_shape_and_grads(_inline(kernel=kernel), make_input(n=13, c=DIM), hw=(3, 4))  # one prefix token


def test_linear_form_equals_explicit_weights():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 5, generator=g, dtype=torch.float64) for _ in range(3))
    mask = padding_mask(2, 9, [9, 5])
    for m in (None, mask):
        w = inline_weights(q, k, m)
        torch.testing.assert_close(w.sum(-1), torch.ones_like(w.sum(-1)), **TOL)  # rows sum to 1 ...
        assert (w < 0).any()  # ... by subtraction: weights may be negative
        torch.testing.assert_close(inline_attention(q, k, v, m), w @ v, **TOL)
    assert (inline_weights(q, k, mask)[1, ..., 5:] == 0).all()


def test_injective_where_division_based_linear_attention_collapses():
    """The paper's example: queries q and 2q. Division-normalised linear attention gives both the same
    attention row (for any kernel that is homogeneous, e.g. ReLU or identity); InLine does not."""
    g = torch.Generator().manual_seed(1)
    k = torch.randn(1, 1, 6, 4, generator=g, dtype=torch.float64)
    q1 = torch.randn(1, 1, 1, 4, generator=g, dtype=torch.float64).abs()
    q2 = 2 * q1

    def linear_rows(q: torch.Tensor) -> torch.Tensor:
        scores = F.relu(q) @ F.relu(k).transpose(-2, -1)
        return scores / scores.sum(-1, keepdim=True)

    torch.testing.assert_close(linear_rows(q1), linear_rows(q2), **TOL)  # collapsed: not injective
    w1, w2 = inline_weights(q1, k), inline_weights(q2, k)
    assert (w1 - w2).abs().max() > 1e-3
    # and the module passes the difference on: scaling x scales q, which InLine sees
    module = _inline(local_kernel=0)
    with torch.no_grad():
        module.qkv.bias.zero_()
        x = make_input(1, 6, DIM)
        y1, y2 = module(x), module(x * 2) / 2  # linear attention with division would give y2 == y1 here
    assert not torch.allclose(y1, y2)


def test_official_formula():
    """out = q @ (K^T V) * s / N + (1 - s q . mean K) mean V (official DeiT code), plus the local term."""
    module = _inline(local_kernel=0)
    x = make_input(1, 8, DIM)
    b, n, h, d = 1, 8, HEADS, DIM // HEADS
    q, k, v = module.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    s = d**-0.5
    out = q @ (k.transpose(-2, -1) @ v) * s / n + (1 - q @ k.mean(2, keepdim=True).transpose(-2, -1) * s) * v.mean(
        2, keepdim=True
    )
    expected = module.proj(out.transpose(1, 2).reshape(b, n, DIM))
    torch.testing.assert_close(module(x), expected, **TOL)


def test_local_term_is_a_3x3_neighbourhood_on_the_grid():
    module = _inline()
    x = make_input(1, 17, DIM)  # a class token + a 4 x 4 grid
    v = make_input(1, 17, DIM, seed=5)
    with torch.no_grad():
        base = module._local_term(x, v, None, (4, 4))
        v2 = v.clone()
        v2[0, 1 + 5] += 1.0  # grid cell (1, 1)
        changed = (module._local_term(x, v2, None, (4, 4)) - base).abs().sum(-1)[0]
    touched = {int(i) for i in torch.nonzero(changed > 0).flatten()}
    neighbours = {1 + r * 4 + c for r in range(3) for c in range(3)}  # cells (0..2, 0..2)
    assert touched == neighbours
    assert (base[0, 0] == 0).all(), "prefix tokens get no local term"


def test_mask_honoured():
    x = make_input(n=10, c=DIM)
    mask = padding_mask(2, 10, [6, 10])
    assert_mask_honoured(_inline(), x, mask)
    assert_mask_honoured(_inline(kernel="relu"), x, mask)


def test_gradcheck():
    module = build("inline", 8, 2).double()
    x = make_input(1, 5, 8).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: module(t, mask=padding_mask(1, 5, [4])), (x,))


def test_bad_options():
    with pytest.raises(ConfigError):
        InLineAttention(DIM, HEADS, kernel="softmax")
    with pytest.raises(ConfigError):
        InLineAttention(DIM, HEADS, local_kernel=4)
    with pytest.raises(ConfigError):
        _inline()(make_input(n=10, c=DIM), hw=(4, 4))
    with pytest.raises(ConfigError):
        build("inline", DIM, HEADS, causal=True)

"""BinaryLinear: sign forward with the clipped straight-through estimator, +-scale per output channel."""

from __future__ import annotations

import torch
from torch import nn

from apps.bivit.binary import BinaryLinear, binarize_linears


def test_binary_weights_take_two_values_per_channel():
    layer = BinaryLinear(16, 5)
    with torch.no_grad():
        layer.scale.copy_(torch.rand(5, 1) + 0.1)  # distinct learned scales
    w = layer.binary_weight()
    for o in range(5):
        values = set(w[o].abs().unique().tolist())
        assert values == {layer.scale[o, 0].item()}, values  # |w| = scale_o everywhere
        assert (w[o] > 0).any() and (w[o] < 0).any()  # both signs present (centred weights)


def test_scale_initialised_to_mean_abs_centred_weight():
    linear = nn.Linear(8, 3)
    layer = BinaryLinear.from_linear(linear)
    centred = linear.weight - linear.weight.mean(1, keepdim=True)
    torch.testing.assert_close(layer.scale.detach(), centred.abs().mean(1, keepdim=True))
    torch.testing.assert_close(layer.weight, linear.weight)
    torch.testing.assert_close(layer.bias, linear.bias)


def test_forward_is_sign_input_times_binary_weight():
    layer = BinaryLinear(6, 4)
    x = torch.randn(3, 6)
    want = torch.where(x >= 0, 1.0, -1.0) @ layer.binary_weight().T + layer.bias
    torch.testing.assert_close(layer(x), want)
    # W1A32: inputs untouched
    layer.binary_input = False
    torch.testing.assert_close(layer(x), x @ layer.binary_weight().T + layer.bias)


def test_activation_ste_is_clipped_identity():
    layer = BinaryLinear(4, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0, 2.0, -2.0]]))  # centred already: signs +,-,+,-
        layer.scale.fill_(0.5)
    x = torch.tensor([[0.3, -0.7, 1.5, -3.0]], requires_grad=True)
    layer(x).sum().backward()
    # d out / d sign(x) = scale * sign(w_c); the STE passes it where |x| < 1 and blocks it elsewhere
    torch.testing.assert_close(x.grad, torch.tensor([[0.5, -0.5, 0.0, 0.0]]))


def test_weight_ste_and_scale_gradients():
    layer = BinaryLinear(3, 2, bias=False, binary_input=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, -0.1, 0.5], [-0.3, 0.4, 0.0]]))
        layer.reset_scale()
    x = torch.tensor([[1.0, 2.0, 3.0]])
    layer(x).sum().backward()
    signs = torch.where(layer.weight - layer.weight.mean(1, keepdim=True) >= 0, 1.0, -1.0)
    # d/d scale_o = sum_i x_i sign(w_oi)
    torch.testing.assert_close(layer.scale.grad, (signs * x).sum(1, keepdim=True))
    # weight: STE (identity, |w_c| < 1) through the centring: d/dw = scale * (x - mean(x))
    want = layer.scale.detach() * (x - x.mean())
    torch.testing.assert_close(layer.weight.grad, want.expand(2, 3))


def test_binarize_linears_replaces_in_place_and_refuses_non_linear():
    block = nn.Sequential(nn.Linear(4, 4), nn.GELU())
    assert binarize_linears(block, ("0",)) == ["0"]
    assert isinstance(block[0], BinaryLinear)
    try:
        binarize_linears(block, ("1",))
    except ValueError as exc:
        assert "nn.Linear" in str(exc)
    else:
        raise AssertionError("a GELU was binarised")

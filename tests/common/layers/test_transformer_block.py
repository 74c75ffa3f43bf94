"""The generic transformer block: every registered token mixer swapped in by name; causal blocks stay causal."""

import pytest
import torch
from torch import nn

from common.attention import MECHANISMS, capabilities
from common.errors import ConfigError
from common.layers import TransformerBlock

DIM, HEADS, N = 16, 2, 12


def _mixers(**requirements) -> list[str]:
    """Registered self-attention token mixers for [B, N, C] input (layout "tokens" or "any") matching requirements."""
    names = []
    for name in MECHANISMS:
        caps = capabilities(name)
        mixer = caps.token_mixer and caps.layout in ("tokens", "any")
        if mixer and all(getattr(caps, k) == v for k, v in requirements.items()):
            names.append(name)
    return names


def _block(attention: str, **kwargs) -> TransformerBlock:
    torch.manual_seed(0)
    return TransformerBlock(DIM, HEADS, attention=attention, **kwargs).double().eval()


def _x(n: int = N) -> torch.Tensor:
    return torch.randn(2, n, DIM, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("attention", _mixers())
def test_every_token_mixer_gives_shapes_and_gradients(attention):
    block = _block(attention).train()
    x = _x().requires_grad_(True)
    y = block(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for name, p in block.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), f"{attention}: non-finite grad for {name}"
    assert block.attn.__class__.__name__ == MECHANISMS[attention].split(":")[1]
    assert block.mlp.fc1.out_features == 4 * DIM


@pytest.mark.parametrize("attention", _mixers(causal=True))
def test_causal_block_stays_causal(attention):
    block = _block(attention, causal=True)
    x = _x()
    x2 = x.clone()
    x2[:, 7:] = 3 * torch.randn_like(x2[:, 7:])
    with torch.no_grad():
        y, y2 = block(x), block(x2)
    torch.testing.assert_close(y[:, :7], y2[:, :7], rtol=1e-9, atol=1e-10)
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


@pytest.mark.parametrize("attention", _mixers(mask=True))
def test_masked_tokens_change_nothing_through_the_block(attention):
    causal = capabilities(attention).causal
    block = _block(attention, causal=True) if causal else _block(attention)
    mask = torch.ones(2, N, dtype=torch.bool)
    mask[1, :4] = False  # left padding (a causal mixer never sees right padding anyway)
    mask[0, 5] = False
    x = _x()
    x2 = x.clone()
    x2[~mask] = 3 * torch.randn_like(x2[~mask])
    with torch.no_grad():
        torch.testing.assert_close(block(x, mask=mask)[mask], block(x2, mask=mask)[mask], rtol=1e-9, atol=1e-10)


def test_non_causal_mixer_refused_for_a_causal_block():
    with pytest.raises(ConfigError, match="causal"):
        TransformerBlock(DIM, HEADS, attention="efficient", causal=True)


@pytest.mark.parametrize("attention", [n for n in MECHANISMS if capabilities(n).token_mixer])
def test_qkv_bias_reaches_exactly_the_mixers_that_declare_it(attention):
    """The block reads `Capabilities.qkv_bias`: declared -> the mixer's projections lose their biases."""

    def mixer_size(qkv_bias: bool) -> int:
        block = TransformerBlock(DIM, HEADS, attention=attention, qkv_bias=qkv_bias)
        return sum(p.numel() for p in block.attn.parameters())

    if capabilities(attention).qkv_bias:
        assert mixer_size(False) < mixer_size(True)
    else:
        assert mixer_size(False) == mixer_size(True)


def test_options_qkv_bias_norm_and_mixer_kwargs():
    block = _block("softmax", qkv_bias=False, norm_layer=nn.RMSNorm, attention_options={"attn_drop": 0.0})
    assert block.attn.q.bias is None and isinstance(block.norm1, nn.RMSNorm)
    x = _x()
    bias = torch.zeros(1, HEADS, N, N, dtype=torch.float64)
    bias[..., 3] = float("-inf")  # extra mixer input: an additive bias, here hiding key 3
    x2 = x.clone()
    x2[:, 3] += 1.0
    with torch.no_grad():
        y, y2 = block(x, bias=bias), block(x2, bias=bias)
    keep = torch.arange(N) != 3
    torch.testing.assert_close(y[:, keep], y2[:, keep])


def test_stateful_mixer_returns_its_state_through_the_block():
    block = _block("gla")
    x = _x()
    with torch.no_grad():
        y_full, s_full = block(x, return_state=True)
        y1, s1 = block(x[:, :5], return_state=True)
        y2, s2 = block(x[:, 5:], state=s1, return_state=True)
    torch.testing.assert_close(torch.cat([y1, y2], dim=1), y_full)
    torch.testing.assert_close(s2, s_full)


def test_drop_path_only_in_training():
    block = _block("softmax", drop_path=0.5)
    x = _x()
    with torch.no_grad():
        torch.testing.assert_close(block(x), block(x))  # eval: deterministic
        block.train()
        torch.manual_seed(0)
        a = block(x)
        torch.manual_seed(1)
        b = block(x)
    assert not torch.allclose(a, b)

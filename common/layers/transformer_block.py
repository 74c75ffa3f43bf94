"""A generic pre-norm transformer block whose token mixer is any registered attention, chosen by name."""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from common.attention import build, capabilities


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: x + mixer(norm(x)), then x + MLP(norm(x)), with stochastic depth.

    The token mixer is built by name through `common.attention.build(attention, dim, num_heads,
    **attention_options)`, so an app exposes `model.attention=<name>` by passing it here. `causal=True` asks
    the mixer for causal attention (the registry refuses mechanisms that cannot, naming those that can);
    the MLP is per token, so a causal mixer gives a causal block. `qkv_bias` is passed to mixers that
    declare it (`Capabilities.qkv_bias`). Extra mixer inputs (`bias=`, `hw=`, `state=`, `return_state=True`,
    ...) go through `forward(..., **mixer_kwargs)`; if the mixer returns a tuple (output, extras...), the
    block returns (x, extras...).

    Args:
        dim: model width C.
        num_heads: heads of the mixer.
        attention: registered mechanism name (see `common.attention.MECHANISMS`).
        attention_options: extra constructor options for the mechanism.
        mlp_ratio: MLP hidden width = dim * mlp_ratio (timm `Mlp`, GELU).
        drop_path: stochastic-depth rate on both residual branches (timm `DropPath`).
        qkv_bias: bias in the mixer's q/k/v projections, where it has that option.
        norm_layer: normalisation class, called as `norm_layer(dim)`.
        causal: build the mixer with `causal=True`.

    Shapes:
        x: [B, N, C]; mask: [B, N] bool (True = real token). Output [B, N, C].
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attention: str = "softmax",
        attention_options: dict | None = None,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        qkv_bias: bool = True,
        norm_layer: type[nn.Module] = nn.LayerNorm,
        causal: bool = False,
    ):
        super().__init__()
        options = dict(attention_options or {})
        if causal:
            options["causal"] = True
        if capabilities(attention).qkv_bias:
            options.setdefault("qkv_bias", qkv_bias)
        self.attention_name, self.causal = attention, causal
        self.norm1 = norm_layer(dim)
        self.attn = build(attention, dim, num_heads, **options)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, **mixer_kwargs):
        """x: [B, N, C] -> [B, N, C] (or a tuple (x, extras...) when the mixer returns extras)."""
        mixed = self.attn(self.norm1(x), mask=mask, **mixer_kwargs)
        extras = ()
        if isinstance(mixed, tuple):
            mixed, *extras = mixed
        x = x + self.drop_path1(mixed)
        x = x + self.drop_path2(self.mlp(self.norm2(x)))
        return (x, *extras) if extras else x

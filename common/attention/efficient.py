"""Efficient Attention (Shen et al.): keys softmaxed over tokens, queries over channels; linear in tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_choice

NORMALIZATIONS = ("softmax", "scaling")


def efficient_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    normalization: str = "softmax",
) -> torch.Tensor:
    """Efficient attention per head: rho_q(Q) (rho_k(K)^T V), never forming the N x N map.

    "softmax" normalisation (the paper's main form, as DAE-Former/TransDAE/NestedMorph use it): keys
    softmaxed over the tokens, queries softmaxed over their channels. "scaling": both divided by sqrt(n),
    n = number of real tokens. Masked keys (mask False) get zero weight, so they change nothing.

    Shapes:
        q, k: [B, H, N, Dk]; v: [B, H, N, Dv]; mask: [B, N] bool (True = real token). Returns [B, H, N, Dv].
    """
    check_choice("normalization", normalization, NORMALIZATIONS)
    keep = None if mask is None else mask.to(torch.bool)[:, None, :, None]  # [B, 1, N, 1]
    if normalization == "softmax":
        if keep is not None:
            k = k.masked_fill(~keep, float("-inf"))
        k = k.softmax(dim=-2)  # over tokens
        if keep is not None:
            k = k.masked_fill(~keep, 0.0)  # also clears NaN from a sample with no real token
        q = q.softmax(dim=-1)  # over channels
    else:
        n = q.new_tensor(q.shape[-2]) if keep is None else keep.sum(dim=-2, keepdim=True).to(q.dtype).clamp_min(1)
        if keep is not None:
            k = k * keep
        k, q = k / n.sqrt(), q / n.sqrt()
    context = k.transpose(-2, -1) @ v  # [B, H, Dk, Dv]
    return q @ context


class EfficientAttention(Mechanism):
    """Efficient Attention with linear complexity in tokens, for 1-D tokens and 2-D/3-D feature maps.

    Paper: Shen, Zhang, Zhao, Yi, Li, "Efficient Attention: Attention with Linear Complexities" (WACV 2021,
    arXiv 1812.01243). Cost: O(N Dk Dv) = O(N C^2) time, O(C^2) extra memory per head; no N x N map.

    As in DAE-Former (TransDAE's base) and NestedMorph: queries, keys, values are 1x1 projections (here
    `nn.Linear` on tokens, the same map as a 1x1 conv), per head the keys are softmaxed over the tokens
    and the queries over the channels, context = K^T V (Dk x Dv), out = Q context, then a 1x1 reprojection.
    The result is a per-token function of a global context, so it does not depend on the spatial layout:
    `hw=`/`dhw=` are only checked against N. Choices where the paper leaves room: multi-head by splitting
    channels (the paper's "head count"); the key softmax runs over real tokens only when a key-padding
    mask is given; no causal form (the key softmax and the context are global).

    Input forms:
        - tokens [B, N, C] (optionally with `hw=(H, W)` or `dhw=(D, H, W)`, N = H*W or D*H*W) -> [B, N, C];
        - channel-first maps [B, C, H, W] or [B, C, D, H, W] -> same shape (flattened row-major to tokens).

    Args:
        dim: input/output width C.
        num_heads: heads; `key_dim` and `value_dim` must be divisible by it.
        key_dim: query/key width (default `dim`).
        value_dim: value width (default `dim`).
        qkv_bias: bias in the 1x1 projections (DAE-Former: True).
        normalization: "softmax" (paper/DAE-Former) or "scaling" (the paper's 1/sqrt(n) variant).

    Shapes:
        x: [B, N, C] or [B, C, H, W] or [B, C, D, H, W]; mask: [B, N] bool (tokens form only).
        Output: same shape as x.
    """

    capabilities = Capabilities(
        paper="Efficient Attention: Attention with Linear Complexities (Shen et al., WACV 2021, arXiv 1812.01243)",
        causal=False,
        layout="any",
        mask=True,
        bias=False,
        cost="N",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int = 1,
        key_dim: int | None = None,
        value_dim: int | None = None,
        qkv_bias: bool = True,
        normalization: str = "softmax",
    ):
        key_dim, value_dim = key_dim or dim, value_dim or dim
        super().__init__(num_heads, key_dim=key_dim, value_dim=value_dim)
        check_choice("normalization", normalization, NORMALIZATIONS)
        self.normalization = normalization
        self.queries = nn.Linear(dim, key_dim, bias=qkv_bias)
        self.keys = nn.Linear(dim, key_dim, bias=qkv_bias)
        self.values = nn.Linear(dim, value_dim, bias=qkv_bias)
        self.reprojection = nn.Linear(value_dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        hw: tuple[int, int] | None = None,
        dhw: tuple[int, int, int] | None = None,
    ) -> torch.Tensor:
        """Tokens [B, N, C] (hw/dhw optional) or a channel-first map; returns the same shape."""
        spatial = None
        if x.ndim in (4, 5):  # [B, C, *spatial] -> tokens
            spatial = x.shape[2:]
            x = x.flatten(2).transpose(1, 2)
        elif x.ndim != 3:
            raise ValueError(f"EfficientAttention: expected [B, N, C] or a [B, C, (D,) H, W] map, got {tuple(x.shape)}")
        for name, shape in (("hw", hw), ("dhw", dhw)):
            if shape is not None and math.prod(shape) != x.shape[1]:
                raise ValueError(f"EfficientAttention: {name}={tuple(shape)} does not cover N={x.shape[1]} tokens")
        (q,), (k,), (v,) = (self.split_heads(proj(x), parts=1) for proj in (self.queries, self.keys, self.values))
        out = efficient_attention(q, k, v, mask=mask, normalization=self.normalization)
        out = self.reprojection(out.transpose(1, 2).flatten(2))
        if spatial is not None:
            out = out.transpose(1, 2).reshape(out.shape[0], -1, *spatial)
        return out

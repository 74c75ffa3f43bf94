"""Efficient cross-attention (DAE-Former's skip connection): queries and keys from one map, values from another."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.efficient import efficient_attention
from common.attention.registry import Capabilities


class EfficientCrossAttention(Mechanism):
    """Efficient attention across two token sets of the same length: the keys' softmax over tokens and the queries'
    softmax over channels come from `x`, the values from `source`; linear in tokens.

    Paper: Shen et al., "Efficient Attention: Attention with Linear Complexities" (WACV 2021, arXiv 1812.01243), in
    the cross form of DAE-Former's skip connections (Azad et al., arXiv 2212.13504, `Cross_Attention`), which
    TransDAE keeps. As there: per head, context = softmax_N(K)^T V (Dk x Dv) and out = softmax_C(Q) context, with
    Q = K = the features of `x` themselves (no query/key projection: the two softmaxes already make them differ),
    V = `source`, then a linear reprojection to `out_dim` (DAE-Former: twice the value width, so the result adds to
    the concatenation of the two inputs). In DAE-Former `x` is the encoder's skip feature and `source` the
    decoder's upsampled feature: each decoder token receives a mixture of decoder channels weighted by how the
    skip's channels co-occur with them over the whole map. A key-padding mask removes tokens from the context.

    Args:
        dim: width of `x` (queries and keys); `num_heads` must divide it.
        num_heads: heads (DAE-Former: 1).
        value_dim: width of `source` (default `dim`); `num_heads` must divide it.
        out_dim: output width (default `2 * value_dim`, as DAE-Former).

    Shapes:
        x: [B, N, dim]; source: [B, N, value_dim]; mask: [B, N] bool (True = real token). Output [B, N, out_dim].
    """

    capabilities = Capabilities(
        paper="Efficient Attention: Attention with Linear Complexities (Shen et al., WACV 2021, arXiv 1812.01243)",
        causal=False,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        token_mixer=False,
    )

    def __init__(self, dim: int, num_heads: int = 1, value_dim: int | None = None, out_dim: int | None = None):
        value_dim = value_dim or dim
        super().__init__(num_heads, dim=dim, value_dim=value_dim)
        self.dim, self.value_dim = dim, value_dim
        self.reprojection = nn.Linear(value_dim, out_dim or 2 * value_dim)

    def forward(
        self, x: torch.Tensor, source: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x: [B, N, dim] (queries and keys), source: [B, N, value_dim] (values; default x) -> [B, N, out_dim]."""
        source = x if source is None else source
        if source.shape[:2] != x.shape[:2] or source.shape[-1] != self.value_dim or x.shape[-1] != self.dim:
            raise ValueError(
                f"EfficientCrossAttention: x {tuple(x.shape)} and source {tuple(source.shape)} must be "
                f"[B, N, {self.dim}] and [B, N, {self.value_dim}]"
            )
        (qk,), (v,) = self.split_heads(x, parts=1), self.split_heads(source, parts=1)
        out = efficient_attention(qk, qk, v, mask=mask)  # [B, H, N, Dv]
        return self.reprojection(out.transpose(1, 2).flatten(2))

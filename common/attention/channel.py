"""Cross-covariance (channel, "transposed") attention from XCiT: a d x d map per head instead of N x N."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities


def cross_covariance_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    temperature: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """XCA per head: softmax(temperature * q_hat k_hat^T) v, q_hat/k_hat L2-normalised along tokens.

    Masked tokens (mask False) are zeroed in q and k before the normalisation, so they take no part in the
    d x d map; each token's output reads only that map and its own value, so masked tokens change nothing
    in the real tokens' outputs.

    Shapes:
        q, k, v: [B, H, d, N] (channels by tokens); temperature: broadcastable to [B, H, 1, 1];
        mask: [B, N] bool (True = real token). Returns [B, H, d, N].
    """
    if mask is not None:
        keep = mask.to(q.dtype)[:, None, None, :]
        q, k = q * keep, k * keep
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    attn = ((q @ k.transpose(-2, -1)) * temperature).softmax(dim=-1)  # [B, H, d, d]
    if dropout_p > 0:
        attn = F.dropout(attn, p=dropout_p)
    return attn @ v


class ChannelAttention(Mechanism):
    """Cross-covariance attention (XCA): attention between channels, linear in the number of tokens.

    Paper: El-Nouby et al., "XCiT: Cross-Covariance Image Transformers" (NeurIPS 2021, arXiv 2106.09681);
    the ChannelAttention of DAE-Former / TransDAE and NestedMorph's dual blocks.
    Cost: O(N C^2 / H) time, O(C^2 / H) extra memory per sample; no N x N map.

    q, k, v come from one linear map and are split into H heads of d = C/H channels, laid out channels by
    tokens; q and k are L2-normalised along the tokens, the d x d map is softmax(temperature * q k^T) with
    a learned per-head temperature (initialised to 1, as XCiT), and each token's output is the map applied
    to its value, then a linear projection. Not causal: the normalisation and the map are global over
    tokens. Key-padding masks zero the masked tokens in q and k (our choice; XCiT has no masks).

    Args:
        dim: model width C.
        num_heads: heads H (DAE-Former/NestedMorph: 8); `dim` must be divisible by it.
        qkv_bias: bias in the qkv projection (XCiT and DAE-Former default to False).
        attn_drop: dropout on the d x d map (training only).
        proj_drop: dropout after the output projection.

    Shapes:
        x: [B, N, C]; mask: [B, N] bool (True = real token). Output [B, N, C].
    """

    capabilities = Capabilities(
        paper="XCiT: Cross-Covariance Image Transformers (El-Nouby et al., NeurIPS 2021, arXiv 2106.09681)",
        causal=False,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        qkv_bias=True,
    )

    def __init__(
        self, dim: int, num_heads: int, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0
    ):
        super().__init__(num_heads, dim=dim)
        self.attn_drop = attn_drop
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]."""
        q, k, v = (t.transpose(-2, -1) for t in self.split_heads(self.qkv(x)))  # 3 x [B, H, d, N]
        out = cross_covariance_attention(
            q, k, v, self.temperature, mask=mask, dropout_p=self.attn_drop if self.training else 0.0
        )
        return self.proj_drop(self.proj(out.permute(0, 3, 1, 2).flatten(2)))

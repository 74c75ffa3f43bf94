"""Offset attention (PCT): self-attention whose output is the offset x - attention(x), passed through
Linear-BN-ReLU and added back to x; weights are softmax over keys, then renormalised over queries."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


class OffsetAttention(Mechanism):
    """Offset attention of PCT: Point Cloud Transformer (Guo et al., Computational Visual Media 2021,
    arXiv 2012.09688), as RISurConv (arXiv 2408.06110) uses it inside and after each set-abstraction block.

    With q = x Wq, k = x Wk (width dim / qk_ratio, no bias) and v = x Wv:
        A = softmax_over_keys(q k^T), then A[i, j] /= sum_i A[i, j]  (each output column sums to 1)
        y_j = sum_i A[i, j] v_i,  out = x + ReLU(BN(Linear(x - y)))
    The logits are not scaled (as in PCT). The layer holds its own residual and BatchNorm, so it is a whole
    layer, not a token mixer for the generic pre-norm block (`token_mixer=False`). Heads split q, k and v
    into `num_heads` groups (PCT and RISurConv use one).

    A key-padding `mask[B, N]` (True = real token) removes padded tokens from both normalisations and from
    the BatchNorm statistics, so their values change nothing at real tokens. Cost O(N^2) time and memory.

    Args:
        dim: width C.
        num_heads: heads; must divide dim and dim / qk_ratio.
        qk_ratio: query/key width = dim // qk_ratio (PCT: 4).

    Shapes: x [B, N, C], mask [B, N] -> [B, N, C].
    """

    capabilities = Capabilities(
        paper="PCT: Point Cloud Transformer (Guo et al., Computational Visual Media 2021, arXiv 2012.09688)",
        layout="tokens",
        mask=True,
        cost="N^2",
        token_mixer=False,
    )

    def __init__(self, dim: int, num_heads: int = 1, qk_ratio: int = 4):
        check_range("qk_ratio", qk_ratio, 1, dim)
        super().__init__(num_heads, dim=dim, qk_dim=dim // qk_ratio)
        qk_dim = dim // qk_ratio
        self.q = nn.Linear(dim, qk_dim, bias=False)
        self.k = nn.Linear(dim, qk_dim, bias=False)
        self.v = nn.Linear(dim, dim)
        self.trans = nn.Linear(dim, dim)
        self.norm = nn.BatchNorm1d(dim)
        self.act = nn.ReLU()

    def weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The attention weights A [B, H, N (queries i), N (outputs j)], each real column summing to 1."""
        (q,) = self.split_heads(self.q(x), parts=1)
        (k,) = self.split_heads(self.k(x), parts=1)
        logits = q @ k.transpose(-1, -2)
        if mask is not None:
            logits = logits.masked_fill(~mask[:, None, None, :], float("-inf"))
        a = logits.softmax(-1)
        if mask is not None:
            a = a.masked_fill(~mask[:, None, :, None], 0.0)
        return a / (1e-9 + a.sum(-2, keepdim=True))  # PCT's l1 renormalisation over queries

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        (v,) = self.split_heads(self.v(x), parts=1)
        y = (self.weights(x, mask).transpose(-1, -2) @ v).transpose(1, 2).flatten(2)  # [B, N, C]
        offset = self.trans(x - y)
        if mask is None:
            normed = self.norm(offset.flatten(0, 1)).view_as(offset)
        else:  # BatchNorm over the real tokens only
            normed = torch.zeros_like(offset)
            normed[mask] = self.norm(offset[mask])
        return x + self.act(normed)

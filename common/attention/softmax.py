"""Multi-head softmax attention through `F.scaled_dot_product_attention`, with masks, bias and weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


def _allowed_keys(mask: torch.Tensor | None, causal: bool, n: int, m: int, device) -> torch.Tensor | None:
    """Which keys each query may see, as a bool tensor broadcastable to [B, H, N, M] (None: all of them)."""
    allowed = None
    if mask is not None:
        allowed = mask.to(torch.bool)[:, None, None, :]  # [B, 1, 1, M]
    if causal:
        # Bottom-right aligned: query i sits at key position i + (M - N), so N == M is the usual lower triangle.
        tri = torch.ones(n, m, dtype=torch.bool, device=device).tril(diagonal=m - n)
        allowed = tri if allowed is None else allowed & tri
    return allowed


def softmax_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T * scale + bias + mask) v, through SDPA unless the weights are asked for.

    A query row whose keys are all masked out (by `mask`, `causal` or `-inf` in `bias`) gives zeros, on both
    paths (SDPA's behaviour in this torch), never NaN.

    Args:
        q, k, v: per-head queries, keys and values.
        mask: key-padding mask, True = real key; masked keys get no weight.
        bias: additive per-head logits bias (may hold `-inf`), broadcastable to [B, H, N, M].
        causal: query i sees keys <= i + (M - N) (bottom-right aligned; the lower triangle when N == M).
        scale: logits scale; default `D ** -0.5`.
        dropout_p: dropout on the weights (pass 0 in eval).
        return_weights: also return the weights, computed by the explicit (non-fused) path; the returned
            weights are before dropout.

    Shapes:
        q: [B, H, N, D]; k: [B, H, M, D]; v: [B, H, M, Dv]; mask: [B, M]; bias: broadcastable to [B, H, N, M].
        Returns [B, H, N, Dv], and with `return_weights` also weights [B, H, N, M].
    """
    n, m = q.shape[-2], k.shape[-2]
    allowed = _allowed_keys(mask, causal, n, m, q.device)
    if not return_weights:
        attn_mask = allowed
        if bias is not None:
            attn_mask = bias.to(q.dtype)
            if allowed is not None:
                attn_mask = attn_mask.masked_fill(~allowed, float("-inf"))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, scale=scale)

    # Explicit path: the same math, readable, and the weights come out.
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = (q @ k.transpose(-2, -1)) * scale
    if bias is not None:
        logits = logits + bias.to(q.dtype)
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    empty = torch.isneginf(logits).all(dim=-1, keepdim=True)  # rows with no visible key -> zeros, not NaN
    weights = logits.masked_fill(empty, 0.0).softmax(dim=-1).masked_fill(empty, 0.0)
    dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
    return dropped @ v, weights


class SoftmaxAttention(Mechanism):
    """Multi-head scaled dot-product (softmax) attention: self-attention, or cross-attention with `context=`.

    Paper: Vaswani et al., "Attention Is All You Need" (NeurIPS 2017, arXiv 1706.03762).
    Cost: O(N M) time in tokens N and keys M (O(N^2) for self-attention); memory O(N M) on the explicit
    path, less under SDPA's fused kernels.

    The heads are computed by `F.scaled_dot_product_attention`; `return_weights=True` takes the explicit
    path (same math) and also returns the weights, for plots. Options:

    - key-padding `mask[B, M]` (True = real key): masked keys get zero weight, so changing them changes
      nothing. With `context=`, the mask is over the context tokens.
    - additive per-head `bias[B, H, N, M]` (anything broadcastable, e.g. [1, H, N, N]; may hold `-inf`),
      added to the logits before the softmax, as Relation-DETR's position-relation prior.
    - `causal=True`: token i attends to tokens <= i (self-attention only).
    - a query that sees no key (all masked) outputs zeros before the output projection.

    Args:
        dim: model width C.
        num_heads: heads H; `dim` must be divisible by it.
        qkv_bias: bias in the q and k/v projections.
        causal: mask out later tokens.
        attn_drop: dropout on the attention weights (training only).
        proj_drop: dropout after the output projection.
        context_dim: width of `context` tokens for cross-attention (default `dim`).
        scale: logits scale (default head_dim ** -0.5).

    Shapes:
        x: [B, N, C]; context: [B, M, C_ctx] (M = N without context); mask: [B, M] bool;
        bias: broadcastable to [B, H, N, M]. Output [B, N, C]; weights [B, H, N, M].
    """

    capabilities = Capabilities(
        paper="Attention Is All You Need (Vaswani et al., NeurIPS 2017, arXiv 1706.03762)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=True,
        cost="N^2",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        causal: bool = False,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        context_dim: int | None = None,
        scale: float | None = None,
    ):
        super().__init__(num_heads, dim=dim)
        check_range("attn_drop", attn_drop, 0.0, 1.0, high_inclusive=False)
        self.head_dim, self.causal = dim // num_heads, causal
        self.scale = scale
        self.attn_drop = attn_drop
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        bias: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Attend from `x` to itself (or to `context`); see the class docstring for shapes."""
        if self.causal and context is not None:
            raise ValueError("SoftmaxAttention: causal=True is for self-attention; do not pass context=")
        (q,) = self.split_heads(self.q(x), parts=1)
        k, v = self.split_heads(self.kv(x if context is None else context), parts=2)
        out = softmax_attention(
            q,
            k,
            v,
            mask=mask,
            bias=bias,
            causal=self.causal,
            scale=self.scale,
            dropout_p=self.attn_drop if self.training else 0.0,
            return_weights=return_weights,
        )
        out, weights = out if return_weights else (out, None)
        out = self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))
        return (out, weights) if return_weights else out

"""BinarySoftmaxAttention: BiViT's softmax-aware binarisation (SAB) of the attention map."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


class _SignSTE(torch.autograd.Function):
    """sign(x) forward; clipped identity backward (gradient 1 where |x| < 1, else 0), as BiViT's BinaryQuantizer."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        # one fused kernel for grad * 1[|x| < 1] (hardtanh's backward is exactly the clipped identity)
        return torch.ops.aten.hardtanh_backward(grad, x, -1.0, 1.0)


def binarize_sign(x: torch.Tensor) -> torch.Tensor:
    """Binarise to {-1, +1} (0 maps to +1) with the clipped straight-through estimator. Shapes: any -> same."""
    return _SignSTE.apply(x)


def softmax_aware_binarize(
    logits: torch.Tensor, threshold_ratio: float = 0.25, normalize: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax-aware binarisation of attention logits with its straight-through estimator.

    p = softmax(logits) over keys; threshold tau_i = threshold_ratio * max_j p_ij (per query row);
    binary B_ij = 1[p_ij >= tau_i]. The returned map equals B (or B / sum_j B_ij with `normalize`) in the
    forward pass and has the gradient of p in the backward pass: `map = B.detach() - p.detach() + p`.

    Masked keys should carry -inf logits: they get p = 0 < tau and are never kept. Every row needs at least
    one finite logit.

    Args:
        logits: attention logits (scaled, masked).
        threshold_ratio: tau as a fraction of the row maximum, in (0, 1]; BiViT uses 0.25.
        normalize: divide each binary row by its number of kept keys (mean of the kept values) instead of
            the plain {0, 1} sum that BiViT uses.

    Shapes:
        logits: [..., Nq, Nk]; returns (attn, binary, probs, threshold) with attn, binary and probs
        [..., Nq, Nk] and threshold [..., Nq, 1].
    """
    probs = logits.softmax(-1)
    threshold = threshold_ratio * probs.amax(-1, keepdim=True)
    binary = (probs >= threshold).to(probs.dtype)
    forward_value = binary / binary.sum(-1, keepdim=True) if normalize else binary
    attn = forward_value.detach() - probs.detach() + probs
    return attn, binary, probs, threshold


class BinarySoftmaxAttention(Mechanism):
    """Multi-head self-attention whose attention map is binarised by softmax-aware binarisation (SAB).

    Paper: "BiViT: Extremely Compressed Binary Vision Transformers", He et al., ICCV 2023
    (arXiv 2211.07091). The attention probabilities p = softmax(q k^T / sqrt(d)) are long-tailed, so a fixed
    0/1 cut (sign of the logits) keeps too many keys. SAB keeps, per query, exactly the keys whose
    probability is at least tau = 0.25 * max_j p_ij and drops the rest:
    out = B v with B = 1[p >= tau] in {0, 1}. Gradients use the straight-through estimator through the
    softmax (forward B, backward dp), as in the official code.

    Cost: O(N^2 d) time and O(N^2) memory per head (the explicit map is needed to threshold it, so this
    does not go through `scaled_dot_product_attention`).

    Choices where the paper leaves details open:
        - The threshold is derived, not learned: tau = `threshold_ratio` * row max of p (official code:
          0.25). A learned ratio would get no gradient through the straight-through estimator.
        - Scale of the binary map: {0, 1} by default as in the official code (`normalize=False`), so a
          query's output is the sum of its kept values; `normalize=True` divides by the kept count (mean).
        - `binarize_qkv=True` binarises q, k, v to {-1, +1} with sign and the clipped STE (BiViT's fully
          binary attention); the projections stay full-precision nn.Linear here (an app that wants binary
          weights swaps them for its binary linear layers).
        - Key-padding masks and causal masking set logits to -inf before the softmax, so masked keys are
          never kept.

    Args:
        dim: model width C.
        num_heads: heads H (C divisible by H).
        threshold_ratio: tau / max_j p_ij, in (0, 1].
        normalize: mean instead of sum over the kept keys.
        binarize_qkv: binarise q, k, v with sign + STE.
        causal: mask keys after the query.
        qkv_bias: bias in the qkv projection.

    Shapes:
        x: [B, N, C]; mask: optional bool [B, N], True = real token; returns [B, N, C].
    """

    capabilities = Capabilities(
        paper="BiViT: Extremely Compressed Binary Vision Transformers (ICCV 2023, arXiv 2211.07091)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N^2",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        threshold_ratio: float = 0.25,
        normalize: bool = False,
        binarize_qkv: bool = False,
        causal: bool = False,
        qkv_bias: bool = True,
    ):
        super().__init__(num_heads, dim=dim)
        check_range("threshold_ratio", threshold_ratio, 0.0, 1.0, low_inclusive=False)
        self.head_dim = dim // num_heads
        self.threshold_ratio, self.normalize, self.binarize_qkv, self.causal = (
            threshold_ratio,
            normalize,
            binarize_qkv,
            causal,
        )
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attention_maps(
        self, x: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The pieces of the forward pass, for inspection and tests.

        Shapes:
            x: [B, N, C]; mask: optional bool [B, N].
            returns (attn, binary, probs, threshold, v): attn/binary/probs [B, H, N, N] (attn is the STE map
            used in forward), threshold [B, H, N, 1], v [B, H, N, D].
        """
        tokens = x.shape[1]
        q, k, v = self.split_heads(self.qkv(x))
        if self.binarize_qkv:
            q, k, v = (binarize_sign(t) for t in (q, k, v))
        logits = (q * self.scale) @ k.transpose(-2, -1)
        allowed = None
        if mask is not None:
            allowed = mask[:, None, None, :]
        if self.causal:
            tril = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).tril()
            allowed = tril if allowed is None else allowed & tril
        if allowed is None:
            attn, binary, probs, threshold = softmax_aware_binarize(logits, self.threshold_ratio, self.normalize)
            return attn, binary, probs, threshold, v
        # a query without any visible key (padded, under a causal mask) gets an all-zero row instead of NaN
        logits = logits.masked_fill(~allowed, float("-inf")).masked_fill(~allowed.any(-1, keepdim=True), 0.0)
        attn, binary, probs, threshold = softmax_aware_binarize(logits, self.threshold_ratio, self.normalize)
        return attn * allowed, binary * allowed, probs * allowed, threshold, v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        attn, _, _, _, v = self.attention_maps(x, mask)
        out = (attn @ v).transpose(1, 2).reshape(batch, tokens, channels)
        return self.proj(out)

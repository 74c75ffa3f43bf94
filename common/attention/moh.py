"""MoH: multi-head attention as a mixture of heads, with shared and top-k routed heads."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.attention.softmax import softmax_attention
from common.errors import ConfigError, check_range


class MixtureOfHeadsAttention(Mechanism):
    """Mixture-of-Head attention: each token weights its heads; shared heads always on, routed heads top-k.

    Paper: "MoH: Multi-Head Attention as Mixture-of-Head Attention", Jin et al., arXiv 2410.11842.
    Multi-head attention is written as a sum over heads, `sum_i W_o^i head_i`; MoH makes it a weighted
    sum `sum_i g_i W_o^i head_i` with per-token gates `g`. Heads `0 .. shared_heads-1` are shared (always
    active); the rest are routed, and each token activates `routed_topk` of them. Gates come from the
    paper's two-stage router:

        [a_s, a_r] = 2 * softmax(W_h x)                       (balances shared against routed heads)
        g_shared   = a_s * shared_heads * softmax(W_s x)       (1 when the router is uniform)
        g_routed   = a_r * routed_topk * renorm(topk(softmax(W_r x)))

    The constant factors follow the official code (SkyworkAI/MoH): with zero router weights every gate is
    1, so with `all_heads=True` the module is exactly multi-head attention with the same projections.

    Cost: O(N^2) time per head (SDPA, through `common.attention.softmax.softmax_attention`). This reference
    computes every head and zeroes the unselected ones, as the official native code does; it does not
    skip the work of inactive heads.

    Choices where the paper leaves a detail open:
        - With one shared head its gate is `a_s` (no softmax over a single head), as in the official code.
        - Load balancing: in training, `self.aux_loss` holds the balance loss over the routed heads as the
          official code computes it, `num_routed * sum_i f_i P_i` (f_i: fraction of real tokens that select
          head i, divided by `routed_topk`; P_i: mean router probability). Add it, times a small weight
          (paper: 0.01), to the training loss. It is None when no head is routed, and in eval mode.

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token.

    Args:
        dim: channels C; must be divisible by `num_heads`.
        num_heads: total heads (shared + routed).
        shared_heads: always-active heads (default `num_heads // 2`).
        routed_topk: routed heads each token activates (default half of the routed heads, at least 1).
        all_heads: activate every head (`routed_topk = num_heads - shared_heads`).
        causal: no token attends to a later one.
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    capabilities = Capabilities(
        paper="MoH: Multi-Head Attention as Mixture-of-Head Attention (Jin et al., arXiv 2410.11842)",
        causal=True,
        mask=True,
        cost="N^2",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        shared_heads: int | None = None,
        routed_topk: int | None = None,
        all_heads: bool = False,
        causal: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        shared_heads = num_heads // 2 if shared_heads is None else shared_heads
        check_range("shared_heads", shared_heads, 0, num_heads)
        num_routed = num_heads - shared_heads
        if all_heads:
            routed_topk = num_routed
        elif routed_topk is None:
            routed_topk = max(1, num_routed // 2) if num_routed else 0
        check_range("routed_topk", routed_topk, 0, num_routed)
        if shared_heads + routed_topk == 0:
            raise ConfigError("routed_topk", routed_topk, "at least 1 when shared_heads=0")
        check_range("attn_drop", attn_drop, 0.0, 1.0)

        self.head_dim = dim // num_heads
        self.shared_heads, self.num_routed, self.routed_topk = shared_heads, num_routed, routed_topk
        self.causal, self.attn_drop = causal, attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        # Routers (W_r, W_s, W_h in the paper); bias-free like the official code.
        self.router = nn.Linear(dim, num_routed, bias=False) if routed_topk else None
        self.shared_router = nn.Linear(dim, shared_heads, bias=False) if shared_heads > 1 else None
        self.balance_router = nn.Linear(dim, 2, bias=False) if shared_heads and routed_topk else None
        self.aux_loss: torch.Tensor | None = None

    def head_gates(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-token head weights, shared heads first; inactive routed heads get exactly 0.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool (only used for the balance loss) -> [B, N, num_heads].
        """
        b, n, _ = x.shape
        parts = []
        if self.shared_heads:
            if self.shared_router is not None:
                shared = self.shared_heads * self.shared_router(x).softmax(-1)
            else:
                shared = x.new_ones(b, n, 1)
            parts.append(shared)
        if self.routed_topk:
            probs = self.router(x).softmax(-1)  # [B, N, num_routed]
            top = probs.topk(self.routed_topk, dim=-1).indices
            chosen = torch.zeros_like(probs).scatter_(-1, top, 1.0)
            routed = probs * chosen
            routed = self.routed_topk * routed / routed.sum(-1, keepdim=True).clamp_min(torch.finfo(x.dtype).eps)
            parts.append(routed)
            self.aux_loss = self._balance_loss(probs, chosen, mask) if self.training else None
        if self.balance_router is not None:
            shared_w, routed_w = (2 * self.balance_router(x).softmax(-1)).unbind(-1)
            parts = [parts[0] * shared_w[..., None], parts[1] * routed_w[..., None]]
        return torch.cat(parts, dim=-1)

    def _balance_loss(self, probs: torch.Tensor, chosen: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """`num_routed * sum_i f_i P_i` over real tokens (f_i normalised by top-k so it sums to 1)."""
        weight = probs.new_ones(probs.shape[:2]) if mask is None else mask.to(probs.dtype)
        count = weight.sum().clamp_min(1.0)
        mean_prob = (probs * weight[..., None]).sum((0, 1)) / count
        fraction = (chosen * weight[..., None]).sum((0, 1)) / (count * self.routed_topk)
        return self.num_routed * (mean_prob * fraction).sum()

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Mixture-of-heads self-attention.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool, True = real token -> [B, N, C].
        """
        b, n, c = x.shape
        q, k, v = self.split_heads(self.qkv(x))
        dropout = self.attn_drop if self.training else 0.0
        heads = softmax_attention(q, k, v, mask=mask, causal=self.causal, dropout_p=dropout)  # [B, H, N, D]
        heads = heads.transpose(1, 2) * self.head_gates(x, mask)[..., None]  # [B, N, H, D], weighted per head
        return self.proj_drop(self.proj(heads.reshape(b, n, c)))

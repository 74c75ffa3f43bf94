"""Routing attention (Routing Transformer): online k-means clusters tokens, attention runs within clusters."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range


class KMeansRoutingAttention(Mechanism):
    """Content-based sparse attention: queries attend only to keys routed to the same k-means centroid.

    Paper: "Efficient Content-Based Sparse Attention with Routing Transformers", Roy, Saffar, Vaswani and
    Grangier, TACL 2021, arXiv 2003.05997.

    Queries and keys are unit-normalised and clustered by one shared set of centroids per head
    (`centroids`, a buffer [H, num_clusters, head_dim]). In training, after routing, the centroids move by
    an exponential moving average toward the mean of the normalised queries and keys assigned to them
    (online mini-batch k-means, paper Sec. 4.1) and are renormalised to the unit sphere. They get no
    gradient. Attention itself uses the raw (unnormalised) queries and keys, scaled by `1/sqrt(head_dim)`.

    Two ways to form the clusters (`assignment=`):
        - "topw" (the paper's balanced routing, default when not causal): each centroid takes its `window`
          nearest queries and its `window` nearest keys (`window` defaults to ceil(N / num_clusters)) and
          attention runs inside each such group. A token picked by several centroids averages their outputs;
          a query picked by none gets 0 (the paper mixes routing heads with local-attention heads, which
          cover such tokens). Cost O(N * window) per head, O(N^1.5) with `num_clusters ~ sqrt(N)`.
        - "membership": each token belongs to its nearest centroid, and query i attends to key j when they
          share a centroid (the paper's Eq. for X'_i), as a boolean mask on dense attention: O(N^2) time,
          exact and strictly causal. Causal routing needs it: in "topw" a token's group depends on which
          later tokens compete for the same centroid, which leaks the future.

    Choices where the paper leaves a detail open:
        - Unit L2 normalisation for routing (the paper's layer norm without scale and bias, up to centring).
        - The EMA step uses the mean (not the sum) of the assigned vectors, then renormalises; clusters with
          no vector in the batch keep their centroid. Centroids start as random unit vectors. They are not
          synchronised across processes.
        - Every token may attend to itself (so no query has an empty row in "membership" mode).
        - Padded tokens (mask False) are never selected ahead of real ones in "topw" and are left out of the
          centroid update.

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token.

    Args:
        dim: channels C; must be divisible by `num_heads`.
        num_heads: attention heads H.
        num_clusters: centroids per head.
        window: tokens per cluster in "topw" mode (default ceil(N / num_clusters)).
        assignment: "topw" or "membership" (default: "membership" when causal, else "topw").
        causal: no token attends to a later one (needs "membership").
        shared_qk: use the query projection for keys too (one projection, as in the paper's LM setups).
        ema_decay: EMA decay of the centroid update (the paper's lambda).
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    capabilities = Capabilities(
        paper="Efficient Content-Based Sparse Attention with Routing Transformers (Roy et al., TACL 2021, "
        "arXiv 2003.05997)",
        causal=True,
        mask=True,
        cost="N sqrt N",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_clusters: int = 4,
        window: int | None = None,
        assignment: str | None = None,
        causal: bool = False,
        shared_qk: bool = False,
        ema_decay: float = 0.999,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        check_range("num_clusters", num_clusters, 1)
        if window is not None:
            check_range("window", window, 1)
        assignment = ("membership" if causal else "topw") if assignment is None else assignment
        check_choice("assignment", assignment, {"topw", "membership"})
        if causal and assignment == "topw":
            raise ConfigError("assignment", assignment, "'membership' with causal=True (top-w routing sees the future)")
        check_range("ema_decay", ema_decay, 0.0, 1.0)
        check_range("attn_drop", attn_drop, 0.0, 1.0)

        self.head_dim = dim // num_heads
        self.num_clusters, self.window, self.assignment = num_clusters, window, assignment
        self.causal, self.shared_qk, self.ema_decay, self.attn_drop = causal, shared_qk, ema_decay, attn_drop
        self.qkv = nn.Linear(dim, (2 if shared_qk else 3) * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer("centroids", F.normalize(torch.randn(num_heads, num_clusters, self.head_dim), dim=-1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Routing attention; in training also one EMA step of the centroids.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool, True = real token -> [B, N, C].
        """
        b, n, c = x.shape
        parts = self.split_heads(self.qkv(x), parts=2 if self.shared_qk else 3)
        q, k, v = (parts[0], parts[0], parts[1]) if self.shared_qk else parts  # [B, H, N, D]
        q_unit, k_unit = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        centroids = self.centroids.to(q.dtype)
        q_sim = torch.einsum("bhnd,hkd->bhnk", q_unit, centroids)  # [B, H, N, K]
        k_sim = torch.einsum("bhnd,hkd->bhnk", k_unit, centroids)

        if self.assignment == "membership":
            out = self._membership(q, k, v, q_sim.argmax(-1), k_sim.argmax(-1), mask)
        else:
            out = self._topw(q, k, v, q_sim, k_sim, mask)
        if self.training:
            self.update_centroids(q_unit.detach(), k_unit.detach(), mask)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

    def _membership(self, q, k, v, q_cluster, k_cluster, mask):
        """Dense attention masked to same-cluster pairs (plus self, causality and key padding)."""
        n = q.shape[2]
        idx = torch.arange(n, device=q.device)
        allowed = q_cluster[..., :, None] == k_cluster[..., None, :]  # [B, H, N, N]
        if mask is not None:
            allowed = allowed & mask.bool()[:, None, None, :]
        allowed = allowed | (idx[:, None] == idx[None, :])
        if self.causal:
            allowed = allowed & (idx[None, :] <= idx[:, None])
        dropout = self.attn_drop if self.training else 0.0
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=dropout)

    def _topw(self, q, k, v, q_sim, k_sim, mask):
        """Each centroid gathers its `window` nearest queries and keys; attention inside each group."""
        b, h, n, d = q.shape
        w = min(n, self.window or math.ceil(n / self.num_clusters))
        if mask is not None:  # padded tokens are picked only after every real one
            pad = ~mask.bool()[:, None, :, None]
            q_sim, k_sim = q_sim.masked_fill(pad, -torch.inf), k_sim.masked_fill(pad, -torch.inf)
        q_idx = q_sim.topk(w, dim=2).indices.transpose(2, 3)  # [B, H, K, w]
        k_idx = k_sim.topk(w, dim=2).indices.transpose(2, 3)

        def gather(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # [B, H, N, D] -> [B, H, K, w, D]
            flat = index.reshape(b, h, -1, 1).expand(-1, -1, -1, t.shape[-1])
            return t.gather(2, flat).view(b, h, self.num_clusters, w, t.shape[-1])

        key_mask = None
        if mask is not None:
            key_mask = mask.bool()[:, None, :].expand(b, h, n).gather(2, k_idx.reshape(b, h, -1))
            key_mask = key_mask.view(b, h, self.num_clusters, 1, w)
        dropout = self.attn_drop if self.training else 0.0
        grouped = F.scaled_dot_product_attention(
            gather(q, q_idx), gather(k, k_idx), gather(v, k_idx), attn_mask=key_mask, dropout_p=dropout
        )  # [B, H, K, w, D]

        flat_idx = q_idx.reshape(b, h, -1, 1)
        total = q.new_zeros(b, h, n, d).scatter_add(2, flat_idx.expand(-1, -1, -1, d), grouped.reshape(b, h, -1, d))
        count = q.new_zeros(b, h, n, 1).scatter_add(2, flat_idx, q.new_ones(b, h, flat_idx.shape[2], 1))
        return total / count.clamp_min(1.0)

    @torch.no_grad()
    def update_centroids(self, q_unit: torch.Tensor, k_unit: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """One online k-means step: EMA of each centroid toward the mean of its assigned unit vectors.

        Shapes:
            q_unit, k_unit: [B, H, N, D] unit-normalised queries and keys; mask: [B, N] bool.
        """
        h, num_clusters, d = self.centroids.shape
        points = torch.cat([q_unit, k_unit], dim=2).transpose(0, 1).reshape(h, -1, d)  # [H, 2BN, D]
        if mask is not None:
            weight = mask.to(points.dtype)[:, None, :].expand(-1, 2, -1).reshape(1, -1).expand(h, -1)
        else:
            weight = points.new_ones(h, points.shape[1])
        centroids = self.centroids.to(points.dtype)
        nearest = torch.einsum("hpd,hkd->hpk", points, centroids).argmax(-1)  # [H, P]
        onehot = F.one_hot(nearest, num_clusters).to(points.dtype) * weight[..., None]  # [H, P, K]
        counts = onehot.sum(1)  # [H, K]
        means = torch.einsum("hpk,hpd->hkd", onehot, points) / counts.clamp_min(1.0)[..., None]
        moved = F.normalize(self.ema_decay * centroids + (1 - self.ema_decay) * means, dim=-1)
        self.centroids.copy_(torch.where(counts[..., None] > 0, moved, centroids).to(self.centroids.dtype))

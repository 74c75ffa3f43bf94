"""DINO-style deformable decoder: self-attention (mask + optional bias), deformable cross-attention, FFN,
iterative box refinement with look-forward-twice, query positions from the reference boxes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from common.attention.softmax import softmax_attention
from common.detection.encoder import FeedForward, LevelDeformableAttention, MultiScaleTokens
from common.detection.position import box_sine_embedding

# bias_fn(layer_index, previous_boxes or None, current_boxes) -> additive bias broadcastable to [B, H, Q, Q]
BiasFn = Callable[[int, "torch.Tensor | None", torch.Tensor], "torch.Tensor | None"]


class MLP(nn.Module):
    """Linear layers with ReLU between them (DETR's box head and query-position head)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else torch.relu(layer(x))
        return x


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


class QuerySelfAttention(nn.Module):
    """Multi-head self-attention with q = k = x + pos and v = x, through the core's softmax attention.

    Shapes: x, pos [B, N, D]; bias broadcastable to [B, H, N, N] (may hold -inf) -> [B, N, D].
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        qk = x + pos
        out = softmax_attention(self._heads(self.q(qk)), self._heads(self.k(qk)), self._heads(self.v(x)), bias=bias)
        return self.out(out.transpose(1, 2).flatten(2))


def attention_bias(mask: torch.Tensor | None, bias: torch.Tensor | None) -> torch.Tensor | None:
    """Merge a bool mask (True = blocked) and an additive bias into one additive bias (-inf where blocked)."""
    if mask is None:
        return bias
    blocked = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill(mask, float("-inf"))
    return blocked if bias is None else bias + blocked


class DeformableDecoderLayer(nn.Module):
    """Self-attention among queries -> deformable cross-attention into the memory -> FFN (post-norm).

    `attn_layer` is the self-attention class, built as attn_layer(dim, num_heads) with QuerySelfAttention's
    forward (a variant may swap in another implementation of the same math).

    Shapes: query, query_pos [B, Q, D]; reference_boxes [B, Q, L, 4] (cx, cy, w, h on each level's padded
    map); self_attn_mask bool [Q, Q] (True = blocked); self_attn_bias broadcastable to [B, heads, Q, Q].
    """

    def __init__(
        self,
        dim=256,
        num_heads=8,
        num_levels=4,
        num_points=4,
        ffn_dim=1024,
        dropout=0.0,
        impl="auto",
        attn_layer: type[nn.Module] = QuerySelfAttention,
    ):
        super().__init__()
        self.self_attn = attn_layer(dim, num_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = LevelDeformableAttention(dim, num_heads, num_levels, num_points, impl=impl)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(
        self,
        query: torch.Tensor,
        query_pos: torch.Tensor,
        reference_boxes: torch.Tensor,
        memory: torch.Tensor,
        tokens: MultiScaleTokens,
        self_attn_mask: torch.Tensor | None = None,
        self_attn_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        bias = attention_bias(self_attn_mask, self_attn_bias)
        query = self.norm1(query + self.dropout(self.self_attn(query, query_pos, bias)))
        attended = self.cross_attn(query + query_pos, reference_boxes, memory, tokens, value_mask=~tokens.padding)
        query = self.norm2(query + self.dropout(attended))
        return self.ffn(query)


class DeformableDecoder(nn.Module):
    """Decoder layers with per-layer class and box heads and DINO's iterative refinement.

    Each layer predicts a box delta on its normalised output; the layer's boxes are
    sigmoid(delta + inverse_sigmoid(previous boxes)) with the previous boxes *not* detached
    (look-forward-twice: layer i's loss also trains layer i-1's refinement), while the next layer's input
    reference is detached. The query position is MLP(sine(reference box)).

    forward(query, reference_unsigmoid, memory, tokens, self_attn_mask=None, bias_fn=None) ->
        (logits: list of [B, Q, C] per layer, boxes: list of [B, Q, 4] per layer).
    `bias_fn(i, previous_boxes, current_boxes)` gives layer i's additive self-attention bias from the boxes
    before and after the previous layer (previous is None for layer 0); Relation-DETR's position relation
    plugs in here. `attn_layer`: the layers' self-attention class (see DeformableDecoderLayer).
    """

    def __init__(
        self,
        num_classes: int,
        num_layers=6,
        dim=256,
        num_heads=8,
        num_levels=4,
        num_points=4,
        ffn_dim=1024,
        dropout=0.0,
        attn_layer: type[nn.Module] = QuerySelfAttention,
    ):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableDecoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, dropout, attn_layer=attn_layer)
            for _ in range(num_layers)
        )
        self.query_pos_head = MLP(2 * dim, dim, dim, 2)
        self.norm = nn.LayerNorm(dim)
        self.class_heads = nn.ModuleList(nn.Linear(dim, num_classes) for _ in range(num_layers))
        self.box_heads = nn.ModuleList(MLP(dim, dim, 4, 3) for _ in range(num_layers))
        self.dim = dim
        for head in self.class_heads:  # focal-loss prior 0.01: start predicting "nothing" (RetinaNet)
            nn.init.constant_(head.bias, -math.log(99.0))
        for head in self.box_heads:  # start from "no change" to the reference boxes
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_unsigmoid: torch.Tensor,
        memory: torch.Tensor,
        tokens: MultiScaleTokens,
        self_attn_mask: torch.Tensor | None = None,
        bias_fn: BiasFn | None = None,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        boxes = reference_unsigmoid.sigmoid()  # carries gradient from the previous layer (look-forward-twice)
        previous = None
        ratios = torch.cat([tokens.valid_ratios, tokens.valid_ratios], -1)[:, None]  # [B, 1, L, 4]
        all_logits, all_boxes = [], []
        for i, layer in enumerate(self.layers):
            reference = boxes.detach()
            query_pos = self.query_pos_head(box_sine_embedding(reference, self.dim // 2))
            bias = bias_fn(i, previous, reference) if bias_fn is not None else None
            query = layer(query, query_pos, reference[:, :, None] * ratios, memory, tokens, self_attn_mask, bias)
            hidden = self.norm(query)
            previous = reference
            boxes = (self.box_heads[i](hidden) + inverse_sigmoid(boxes)).sigmoid()
            all_logits.append(self.class_heads[i](hidden))
            all_boxes.append(boxes)
        return all_logits, all_boxes

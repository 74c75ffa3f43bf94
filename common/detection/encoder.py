"""Deformable DETR encoder: multi-scale tokens, their reference points, and post-norm deformable layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.deformable_ms import MultiScaleDeformableAttention


@dataclass
class MultiScaleTokens:
    """The feature levels flattened into one token sequence, with what deformable attention needs.

    Fields (N = sum over levels of H_l * W_l):
        src: [B, N, D] tokens; pos: [B, N, D] sine position + level embedding.
        padding: [B, N] bool, True = padding token.
        spatial_shapes: [L, 2] long (H_l, W_l); level_start_index: [L] long.
        valid_ratios: [B, L, 2] float, the unpadded fraction (x, y) of each level.
        level_shapes: the (H_l, W_l) read from the levels' tensor shapes, not from a tensor's values: ints in
            eager mode, symbolic sizes under torch.export (so an exported graph keeps height and width dynamic).
        padded: False when the batch came without a padding mask (every token real; export and predict).
    """

    src: torch.Tensor
    pos: torch.Tensor
    padding: torch.Tensor
    spatial_shapes: torch.Tensor
    level_start_index: torch.Tensor
    valid_ratios: torch.Tensor
    level_shapes: list[tuple[int, int]]
    padded: bool = True

    @property
    def num_levels(self) -> int:
        return len(self.level_shapes)

    def token_levels(self) -> torch.Tensor:
        """[N] long: the level of each token."""
        return torch.cat(
            [
                torch.full((h * w,), level, dtype=torch.long, device=self.src.device)
                for level, (h, w) in enumerate(self.level_shapes)
            ]
        )

    def token_centres(self) -> torch.Tensor:
        """[B, N, 2] pixel centres (x, y) normalised by each image's unpadded size (can exceed 1 on padding)."""
        centres = []
        for level, (h, w) in enumerate(self.level_shapes):
            ys, xs = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=self.src.device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=self.src.device) + 0.5,
                indexing="ij",
            )
            ratio = self.valid_ratios[:, None, level]  # [B, 1, 2]
            xy = torch.stack([xs.flatten() / w, ys.flatten() / h], -1)[None]  # fraction of the padded map
            centres.append(xy / ratio)
        return torch.cat(centres, 1)

    def reference_points(self) -> torch.Tensor:
        """[B, N, L, 2]: each token's centre expressed on every level's padded map (Deformable DETR)."""
        return self.token_centres()[:, :, None] * self.valid_ratios[:, None]


def valid_ratios(mask: torch.Tensor) -> torch.Tensor:
    """[B, H, W] padding mask (True = padding) -> [B, 2] unpadded fraction along (x, y)."""
    h, w = mask.shape[-2:]
    valid_h = (~mask[:, :, 0]).sum(1).float()
    valid_w = (~mask[:, 0, :]).sum(1).float()
    return torch.stack([valid_w / w, valid_h / h], -1)


def flatten_levels(
    levels: list[torch.Tensor], masks: list[torch.Tensor], pos: list[torch.Tensor], padded: bool = True
) -> MultiScaleTokens:
    """Flatten per-level maps [B, D, H_l, W_l] (+ masks [B, H_l, W_l], positions [B, D, H_l, W_l])."""
    level_shapes = [(lvl.shape[-2], lvl.shape[-1]) for lvl in levels]
    shapes = torch.tensor(level_shapes, dtype=torch.long, device=levels[0].device)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return MultiScaleTokens(
        src=torch.cat([lvl.flatten(2).transpose(1, 2) for lvl in levels], 1),
        pos=torch.cat([p.flatten(2).transpose(1, 2) for p in pos], 1),
        padding=torch.cat([m.flatten(1) for m in masks], 1),
        spatial_shapes=shapes,
        level_start_index=starts,
        valid_ratios=torch.stack([valid_ratios(m) for m in masks], 1),
        level_shapes=level_shapes,
        padded=padded,
    )


class LevelDeformableAttention(MultiScaleDeformableAttention):
    """The core's MultiScaleDeformableAttention, called with `MultiScaleTokens`, and exportable.

    The core reads the level sizes from the `spatial_shapes` tensor (`int(...)`, `.tolist()`), which
    torch.export cannot do (data-dependent values). While exporting, this runs the same math — the core's
    own projections, its offset convention and its torch reference's grid_sample sampling — with the sizes of
    `tokens.level_shapes` (tensor shapes, symbolic under export); otherwise it is the core's forward (and its
    kernel dispatch) unchanged.
    """

    def forward(self, query, reference_points, value, tokens: MultiScaleTokens, value_mask=None):
        if not torch.compiler.is_exporting():
            return super().forward(
                query, reference_points, value, tokens.spatial_shapes, tokens.level_start_index, value_mask
            )
        return self._static_forward(query, reference_points, value, tokens.level_shapes, value_mask)

    def _static_forward(self, query, reference_points, value, level_shapes, value_mask):
        batch, num_queries, _ = query.shape
        heads, levels, points, head_dim = self.num_heads, self.num_levels, self.num_points, self.head_dim
        v = self.value_proj(value)
        if value_mask is not None:
            v = v.masked_fill(~value_mask[..., None], 0.0)
        offsets = self.sampling_offsets(query).view(batch, num_queries, heads, levels, points, 2)
        weights = self.attention_weights(query).view(batch, num_queries, heads, levels * points).softmax(-1)
        if reference_points.shape[-1] == 2:
            sizes_wh = torch.tensor([[w, h] for h, w in level_shapes], dtype=offsets.dtype, device=offsets.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / sizes_wh[None, None, None, :, None, :]
        else:
            centres, sizes = reference_points[:, :, None, :, None, :2], reference_points[:, :, None, :, None, 2:]
            locations = centres + offsets / points * sizes * 0.5
        grids = 2.0 * locations - 1.0
        sampled, start = [], 0
        for level, (h, w) in enumerate(level_shapes):
            value_l = v[:, start : start + h * w].view(batch, h * w, heads, head_dim).permute(0, 2, 3, 1)
            grid_l = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, points, 2)
            sampled.append(
                F.grid_sample(
                    value_l.reshape(batch * heads, head_dim, h, w), grid_l, mode="bilinear", align_corners=False
                )
            )
            start += h * w
        stacked = torch.stack(sampled, dim=-2).flatten(-2)  # [B*H, D, Nq, L*P]
        out = (stacked * weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, levels * points)).sum(-1)
        return self.output_proj(out.view(batch, heads * head_dim, num_queries).transpose(1, 2))


class FeedForward(nn.Module):
    """Post-norm FFN block: x + dropout(W2 act(W1 x)), then LayerNorm."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(self.fc2(self.dropout(F.relu(self.fc1(x))))))


class DeformableEncoderLayer(nn.Module):
    """Deformable self-attention over all levels, then FFN; post-norm as in Deformable DETR.

    `query` may be a subset of the tokens (Focus-DETR's kept foreground tokens) attending to the full
    `value` map; by default it is the whole map.

    Shapes: query [B, Nq, D], query_pos [B, Nq, D], reference_points [B, Nq, L, 2], value [B, N, D],
    value_mask [B, N] bool (True = real token) -> [B, Nq, D].
    """

    def __init__(self, dim=256, num_heads=8, num_levels=4, num_points=4, ffn_dim=1024, dropout=0.0, impl="auto"):
        super().__init__()
        self.attn = LevelDeformableAttention(dim, num_heads, num_levels, num_points, impl=impl)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim, dropout)

    def forward(self, query, query_pos, reference_points, value, tokens: MultiScaleTokens):
        attended = self.attn(query + query_pos, reference_points, value, tokens, value_mask=~tokens.padding)
        return self.ffn(self.norm(query + self.dropout(attended)))


class DeformableEncoder(nn.Module):
    """A stack of deformable encoder layers over all tokens (dense: every token is a query).

    forward(tokens) -> (memory [B, N, D], extras dict) — the extras are what a variant adds to the outputs
    (none here; Focus-DETR returns its foreground scores).
    """

    def __init__(self, num_layers=6, dim=256, num_heads=8, num_levels=4, num_points=4, ffn_dim=1024, dropout=0.0):
        super().__init__()
        self.layers = nn.ModuleList(
            DeformableEncoderLayer(dim, num_heads, num_levels, num_points, ffn_dim, dropout) for _ in range(num_layers)
        )

    def forward(self, tokens: MultiScaleTokens, **_) -> tuple[torch.Tensor, dict]:
        x, ref = tokens.src, tokens.reference_points()
        for layer in self.layers:
            x = layer(x, tokens.pos, ref, x, tokens)
        return x, {}

"""Sine position embeddings: of feature-map pixels (DETR) and of box coordinates (DINO's query positions)."""

from __future__ import annotations

import math

import torch
from torch import nn


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    """temperature ** (2 * (i // 2) / num_feats) for i < num_feats: each frequency used by a sin and a cos."""
    i = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / num_feats)


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """[..., F] angles -> [..., F]: sin of the even channels, cos of the odd ones, interleaved (DETR's order)."""
    return torch.stack([angles[..., 0::2].sin(), angles[..., 1::2].cos()], dim=-1).flatten(-2)


def sine_position_embedding(
    mask: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """DETR's 2-d sine embedding of a padded feature map, normalised over the valid (unpadded) part.

    Positions count valid pixels only (cumulative sum over `~mask`), normalised to [0, scale], so the same
    content gets the same embedding whatever the padding.

    Shapes: mask [B, H, W] bool (True = padding) -> [B, 2 * num_feats, H, W] (y features, then x features).
    """
    valid = (~mask).to(torch.float32)
    y = valid.cumsum(1)
    x = valid.cumsum(2)
    eps = 1e-6
    y = (y - 0.5) / (y[:, -1:, :] + eps) * scale
    x = (x - 0.5) / (x[:, :, -1:] + eps) * scale
    freq = _frequencies(num_feats, temperature, mask.device)
    pos_y = _interleave(y[..., None] / freq)
    pos_x = _interleave(x[..., None] / freq)
    return torch.cat([pos_y, pos_x], dim=-1).permute(0, 3, 1, 2)


def coordinate_sine_embedding(
    coords: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sine embedding of each coordinate separately, concatenated in the given order.

    DINO embeds reference boxes with num_feats = dim / 2 and scale 2 pi; Relation-DETR embeds its four
    box-relation features with num_feats 16, scale 100.

    Shapes: coords [..., K] -> [..., K * num_feats].
    """
    freq = _frequencies(num_feats, temperature, coords.device)
    return _interleave(coords[..., None] * scale / freq).flatten(-2)


def box_sine_embedding(boxes: torch.Tensor, num_feats: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """DINO's query-position embedding of (cx, cy, w, h) boxes, ordered (y, x, w, h) as its reference code.

    Shapes: boxes [..., 4] or points [..., 2] (normalised) -> [..., 4 * num_feats] or [..., 2 * num_feats].
    """
    order = [1, 0, 2, 3][: boxes.shape[-1]]
    return coordinate_sine_embedding(boxes[..., order], num_feats, temperature)


class LevelEmbedding(nn.Module):
    """A learnt vector per feature level, added to the pixel positions so levels stay distinguishable."""

    def __init__(self, num_levels: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_levels, dim))
        nn.init.normal_(self.weight)

    def forward(self, level: int) -> torch.Tensor:
        return self.weight[level]

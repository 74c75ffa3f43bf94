"""Relation-DETR's position relation encoder: pairwise box geometry -> a per-head self-attention bias.

For boxes i (from the set `src`) and j (from `tgt`), the relation is four scalars (Hou et al., ECCV 2024):
    [log(|x_i - x_j| / w_i + 1), log(|y_i - y_j| / h_i + 1), log(w_i / w_j), log(h_i / h_j)]
They do not change when both boxes move together (translation) or when the image is rescaled, so the bias
reflects how objects sit relative to each other, not where they are. Each scalar gets a sine embedding
(16 features, temperature 1e4, scale 100), and a 1x1 convolution + ReLU turns the 64 features of each pair
into one additive logit bias per attention head.
"""

from __future__ import annotations

import torch
from torch import nn

from common.detection.position import coordinate_sine_embedding
from common.errors import check_range


def box_relation_features(src: torch.Tensor, tgt: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[B, N, 4] and [B, M, 4] normalised cxcywh -> [B, N, M, 4] log-ratio geometry of every pair (i, j)."""
    xy_i, wh_i = src[..., None, :2], src[..., None, 2:]
    xy_j, wh_j = tgt[..., None, :, :2], tgt[..., None, :, 2:]
    offset = torch.log((xy_i - xy_j).abs() / (wh_i + eps) + 1.0)
    scale = torch.log((wh_i + eps) / (wh_j + eps))
    return torch.cat([offset, scale], -1)


class PositionRelationEncoder(nn.Module):
    """Pairwise box relation -> additive attention bias [B, heads, N, M] (non-negative, from the ReLU).

    Args:
        num_heads: one bias map per self-attention head.
        num_feats: sine features per relation scalar (the paper: 16, so 64 channels into the projection).
        temperature, scale: of the sine embedding (the paper: 1e4, 100).

    forward(src [B, N, 4], tgt [B, M, 4] or None (= src)) -> [B, num_heads, N, M].
    The geometry and its embedding carry no gradient (as in the paper: boxes are refined by their own
    losses, not through the bias); the projection is learnt.
    """

    def __init__(self, num_heads: int = 8, num_feats: int = 16, temperature: float = 10000.0, scale: float = 100.0):
        super().__init__()
        check_range("num_heads", num_heads, 1)
        check_range("relation_feats", num_feats, 2)
        if num_feats % 2:
            raise ValueError(f"PositionRelationEncoder: num_feats must be even (sin and cos pairs), got {num_feats}")
        self.num_feats, self.temperature, self.scale = num_feats, temperature, scale
        self.proj = nn.Sequential(nn.Conv2d(4 * num_feats, num_heads, kernel_size=1), nn.ReLU())

    def embed(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        """[B, N, M, 4 * num_feats] sine embedding of the relation features."""
        with torch.no_grad():
            rel = box_relation_features(src.float(), tgt.float())
            return coordinate_sine_embedding(rel, self.num_feats, self.temperature, self.scale)

    def forward(self, src: torch.Tensor, tgt: torch.Tensor | None = None) -> torch.Tensor:
        tgt = src if tgt is None else tgt
        return self.proj(self.embed(src, tgt).permute(0, 3, 1, 2))

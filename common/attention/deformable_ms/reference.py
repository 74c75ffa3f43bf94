"""Multi-scale deformable attention: the readable PyTorch reference (the spec a GPU kernel must match)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def deformable_ms_torch(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    level_start_index: torch.Tensor,
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Multi-scale deformable attention core (Zhu et al., ICLR 2021), built on `F.grid_sample`.

    Each query, per head, bilinearly samples `P` points on each of the `L` feature levels and sums them with
    its attention weights. Sampling follows the Deformable-DETR convention: locations are normalised to
    [0, 1] per level with (0, 0) the top-left corner of the top-left pixel, pixel centres at (i + 0.5) / W,
    `align_corners=False`, and points outside the map read zeros (zero padding, per corner).

    Args:
        value: per-head values of all levels, flattened level after level.
        spatial_shapes: (H_l, W_l) of each level, integer.
        level_start_index: offset of each level in the flattened `value` (cumulative sum of H_l * W_l).
        sampling_locations: normalised (x, y) sampling points.
        attention_weights: weight of each sampled point (the caller normalises them, usually a softmax over
            L * P).

    Shapes:
        value: [B, Nv, H, D] with Nv = sum_l H_l * W_l.
        spatial_shapes: [L, 2]; level_start_index: [L].
        sampling_locations: [B, Nq, H, L, P, 2].
        attention_weights: [B, Nq, H, L, P].
        returns: [B, Nq, H * D].
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = sampling_locations.shape
    grids = 2.0 * sampling_locations - 1.0  # grid_sample wants [-1, 1]
    sampled = []
    for level, ((height, width), start) in enumerate(zip(spatial_shapes.tolist(), level_start_index.tolist())):
        # [B, H_l*W_l, H, D] -> [B*H, D, H_l, W_l]
        value_l = value[:, start : start + height * width].permute(0, 2, 3, 1)
        value_l = value_l.reshape(batch * heads, head_dim, height, width)
        # [B, Nq, H, P, 2] -> [B*H, Nq, P, 2]
        grid_l = grids[:, :, :, level].transpose(1, 2).reshape(batch * heads, num_queries, points, 2)
        # -> [B*H, D, Nq, P]
        sampled.append(F.grid_sample(value_l, grid_l, mode="bilinear", padding_mode="zeros", align_corners=False))
    # [B*H, D, Nq, L*P] weighted by [B*H, 1, Nq, L*P]
    stacked = torch.stack(sampled, dim=-2).flatten(-2)
    weights = attention_weights.transpose(1, 2).reshape(batch * heads, 1, num_queries, levels * points)
    out = (stacked * weights).sum(-1)  # [B*H, D, Nq]
    return out.view(batch, heads * head_dim, num_queries).transpose(1, 2).contiguous()

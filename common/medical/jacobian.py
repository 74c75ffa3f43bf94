"""Regularity of a displacement field: the Jacobian determinant of x -> x + u(x), SDlogJ and folding.

`ddf` follows MONAI's convention: [B, 3, D, H, W] in voxels, channel i the displacement along spatial axis i.
Derivatives are finite differences on the voxel grid (central inside, one-sided on the border: `torch.gradient`),
exact for affine fields; for smooth fields the central difference of sin(kx) is sin(k)/k times the true
derivative, an error of about k^2/6.
"""

from __future__ import annotations

import torch

LOG_CLIP = (1e-9, 1e9)  # SDlogJ clips the determinant before the log, as the Learn2Reg evaluation does


def jacobian_determinant(ddf: torch.Tensor) -> torch.Tensor:
    """det(I + grad u) at every voxel. ddf: [B, 3, D, H, W] -> [B, D, H, W]."""
    if ddf.ndim != 5 or ddf.shape[1] != 3:
        raise ValueError(f"jacobian_determinant: expected a displacement [B, 3, D, H, W], got {tuple(ddf.shape)}")
    # j[i][k] = d x'_i / d x_k = delta_ik + d u_i / d x_k
    j = [[g + (i == k) for k, g in enumerate(torch.gradient(ddf[:, i], dim=(1, 2, 3)))] for i in range(3)]
    return (
        j[0][0] * (j[1][1] * j[2][2] - j[1][2] * j[2][1])
        - j[0][1] * (j[1][0] * j[2][2] - j[1][2] * j[2][0])
        + j[0][2] * (j[1][0] * j[2][1] - j[1][1] * j[2][0])
    )


def sdlogj(det: torch.Tensor) -> torch.Tensor:
    """Std of log J over the voxels of each sample (J clipped to LOG_CLIP first). [B, ...] -> [B]."""
    return det.clamp(*LOG_CLIP).log().flatten(1).std(dim=1)


def folding_percent(det: torch.Tensor) -> torch.Tensor:
    """Percentage of voxels where the map folds (det <= 0), per sample. [B, ...] -> [B]."""
    return (det <= 0).flatten(1).float().mean(dim=1) * 100

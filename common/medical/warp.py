"""Volumes onto a registration grid: a cube of `size`^3 isotropic voxels around a brain, and resampling onto it.

Registration networks take fixed-size cubes (NestedMorph: 64^3). A cube grid is an affine [4, 4] (voxel -> mm)
with isotropic spacing, axis-aligned with the RAS+ volumes of `common.medical.volumes`; two volumes of one space
(MNI152 and Colin27 are both in MNI space) resampled onto the same grid stay aligned as they were.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def cube_grid(image: np.ndarray, affine: np.ndarray, size: int, margin: float = 0.05, threshold: float = 0.0):
    """Affine of a `size`^3 isotropic grid centred on the bounding box of `image > threshold`, its longest side
    plus `margin` (a fraction on each side) spanning the cube."""
    idx = np.argwhere(image > threshold)
    if idx.size == 0:
        raise ValueError("cube_grid: the volume has no voxel above the threshold")
    corners = (affine @ np.c_[np.stack([idx.min(0), idx.max(0)]), np.ones(2)].T)[:3].T  # [2, 3] mm
    lo, hi = corners.min(0), corners.max(0)
    spacing = float((hi - lo).max()) * (1 + 2 * margin) / size
    out = np.diag([spacing, spacing, spacing, 1.0])
    out[:3, 3] = (lo + hi) / 2 - spacing * (size - 1) / 2
    return out


def resample(volume: np.ndarray, affine: np.ndarray, grid: np.ndarray, size: int, labels: bool = False) -> np.ndarray:
    """`volume` (voxel -> mm by `affine`) sampled on the `size`^3 `grid`; zeros outside.

    Images: Gaussian anti-aliasing (sigma = 0.4 x the downsampling factor per axis, in source voxels), then
    trilinear. Labels: nearest neighbour (a label is never averaged into another)."""
    to_source = np.linalg.inv(affine) @ grid  # grid voxel -> source voxel
    if not labels:
        factor = np.abs(to_source[:3, :3]).sum(axis=1)  # source voxels per grid voxel, per source axis
        volume = ndimage.gaussian_filter(volume.astype(np.float32), sigma=np.maximum(0.4 * factor, 0) * (factor > 1))
    return ndimage.affine_transform(
        volume, to_source[:3, :3], offset=to_source[:3, 3], output_shape=(size,) * 3, order=0 if labels else 1
    ).astype(np.int64 if labels else np.float32)


def resized_affine(affine: np.ndarray, shape: tuple[int, ...], size: int) -> np.ndarray:
    """The affine of a volume of `shape` (voxel -> mm by `affine`) resized to `size`^3 with corners aligned (as
    `F.interpolate(..., align_corners=True)` does): voxel 0 and the last voxel keep their places in mm."""
    scale = np.diag([(n - 1) / (size - 1) for n in shape] + [1.0])
    return affine @ scale

"""Synthetic registration pairs: random smooth deformation fields and intensity changes (torch, seeded).

A field is MONAI's dense displacement `ddf` [3, S, S, S] in voxels. It is drawn as independent normal
displacements on a coarse control grid, upsampled trilinearly and smoothed with a Gaussian (so it has no kinks
at the control points), then scaled so that its largest displacement is `max_voxels`; a field whose Jacobian
determinant falls below MIN_JACOBIAN anywhere is shrunk until it does not, so the true maps never fold.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers import GaussianFilter
from monai.transforms import Compose, RandAdjustContrast, RandBiasField, RandGaussianNoise

from common.medical.jacobian import jacobian_determinant

MIN_JACOBIAN = 0.2  # a drawn field is shrunk until det(I + grad u) >= this everywhere: no folding in the truth


def draw_field(size: int, max_voxels: float, control: int = 6, generator: torch.Generator | None = None):
    """A random smooth displacement [3, size, size, size] (voxels), largest |u| <= max_voxels, never folding.

    Drawn and checked on a quarter-resolution grid (then upsampled trilinearly): the field is smooth at that
    scale already, and the checks cost 1/64 of full resolution."""
    low = max(size // 4, control)
    coarse = torch.randn(1, 3, control, control, control, generator=generator)
    ddf = F.interpolate(coarse, size=(low,) * 3, mode="trilinear", align_corners=True)
    ddf = GaussianFilter(3, sigma=low / (2 * (control - 1)))(ddf)  # half the control spacing: rounds the kinks
    ddf = ddf * (max_voxels * low / size / ddf.norm(dim=1).amax().clamp_min(1e-6))  # in low-resolution voxels
    while jacobian_determinant(ddf).amin() < MIN_JACOBIAN:
        ddf = ddf * 0.8
    return F.interpolate(ddf * (size / low), size=(size,) * 3, mode="trilinear", align_corners=True)[0]


def intensity_change(seed: int) -> Compose:
    """A seeded MRI-like intensity change of a [1, S, S, S] image in [0, 1]: gamma, smooth bias field, noise."""
    change = Compose(
        [
            RandAdjustContrast(prob=1.0, gamma=(0.7, 1.5)),
            RandBiasField(prob=1.0, coeff_range=(0.0, 0.2), degree=3),
            RandGaussianNoise(prob=1.0, mean=0.0, std=0.01),
        ]
    )
    return change.set_random_state(seed=seed)

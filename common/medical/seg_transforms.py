"""Training augmentation of 2-D segmentation slices with MONAI's dictionary transforms: geometry moves image and
label together (the label by nearest neighbour), intensity changes touch the image only."""

from __future__ import annotations

import numpy as np
from monai.transforms import (
    Compose,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
    Resized,
)

KEYS = ("image", "label")


def _intensity() -> list:
    return [
        RandBiasFieldd("image", coeff_range=(0.0, 0.15), prob=0.3),
        RandAdjustContrastd("image", gamma=(0.7, 1.5), prob=0.3),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandGaussianNoised("image", std=0.02, prob=0.2),
    ]


def train_transforms(
    size: int | None = None, augment: bool = True, flip: bool = True, intensity: bool = True
) -> Compose:
    """{"image": [1, H, W] float, "label": [1, H, W]} -> the same at size x size (if given), randomly augmented
    (unless `augment` is false): left-right flip (where anatomy allows it), rotation +-15 degrees, scaling +-10%,
    shifts of up to 6% of the side, an elastic deformation, and (if `intensity`) a smooth bias field, gamma and
    scale changes of contrast, Gaussian noise. Turn `intensity` off where absolute intensity is the label's cue and
    held-out data share the training data's scanner: a gamma of 0.7-1.5 moves grey matter into white matter's range."""
    resize = [Resized(KEYS, (size, size), mode=("bilinear", "nearest"))] if size else []
    if not augment:
        return Compose(resize)
    side = size or 64
    flips = [RandFlipd(KEYS, prob=0.5, spatial_axis=0)] if flip else []
    return Compose(
        [
            *resize,
            *flips,
            RandAffined(
                KEYS,
                prob=0.7,
                rotate_range=np.pi / 12,
                scale_range=0.1,
                translate_range=0.06 * side,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            ),
            Rand2DElasticd(KEYS, spacing=side / 4, magnitude_range=(0.5, 1.5), prob=0.3, mode=("bilinear", "nearest")),
            *(_intensity() if intensity else []),
        ]
    )

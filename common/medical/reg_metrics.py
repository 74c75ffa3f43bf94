"""Registration metrics of one pair: SSIM, Dice and HD95 of warped labels (MONAI), SDlogJ and folding.

Dice and HD95 are means over the label classes present in the fixed labels (background excluded); HD95 is in
mm (`spacing`). A pair without labels (all zero) gives NaN for both, which the epoch means skip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SSIMMetric

from common.medical.jacobian import folding_percent, jacobian_determinant, sdlogj

SSIM = SSIMMetric(spatial_dims=3, data_range=1.0)
DICE = DiceMetric(include_background=False, reduction="none", ignore_empty=True)
HD95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")


def _class_mean(values: torch.Tensor) -> float:
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if finite.numel() else math.nan


def overlap(warped_labels: torch.Tensor, fixed_labels: torch.Tensor, spacing: float) -> dict[str, float]:
    """{dice, hd95} of [1, 1, S, S, S] int label maps over the fixed map's classes."""
    classes = int(max(warped_labels.max(), fixed_labels.max())) + 1
    if classes < 2:
        return {"dice": math.nan, "hd95": math.nan}
    present = torch.bincount(fixed_labels.flatten(), minlength=classes)[1:] > 0
    pred, true = (F.one_hot(t[:, 0], classes).permute(0, 4, 1, 2, 3).float() for t in (warped_labels, fixed_labels))
    dice = DICE(pred, true)[0][present]
    hd95 = HD95(pred, true, spacing=spacing)[0][present]
    return {"dice": _class_mean(dice), "hd95": _class_mean(hd95)}


def ssim(image: torch.Tensor, reference: torch.Tensor) -> float:
    """MONAI's 3-D SSIM (11^3 Gaussian window, data range 1) of two [1, 1, S, S, S] volumes in [0, 1]."""
    return float(SSIM(image.float().clamp(0, 1), reference.float().clamp(0, 1)).mean())


def pair_metrics(warped, fixed, warped_labels, fixed_labels, ddf, spacing: float) -> dict[str, float]:
    """All metrics of one pair: images [1, 1, S, S, S], label maps [1, 1, S, S, S] int, ddf [1, 3, S, S, S]."""
    det = jacobian_determinant(ddf.float())
    return {
        "ssim": ssim(warped, fixed),
        **overlap(warped_labels, fixed_labels, spacing),
        "sdlogj": float(sdlogj(det)[0]),
        "folding": float(folding_percent(det)[0]),
    }

"""Per-volume segmentation scores as the Synapse protocol computes them: a whole (slice-wise predicted) volume at
once, Dice and the 95th-percentile Hausdorff distance in mm per foreground class, with MONAI's metrics."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric


def _one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """[Z, H, W] class indices -> [1, C, H, W, Z] one-hot (MONAI's batch-first, channel-first layout)."""
    return torch.nn.functional.one_hot(labels.long(), num_classes).permute(3, 1, 2, 0)[None].float()


def volume_scores(pred: torch.Tensor, label: torch.Tensor, num_classes: int, spacing) -> dict[str, np.ndarray]:
    """Dice and HD95 (mm) of each foreground class 1..C-1 of one volume.

    pred, label: [Z, H, W] class indices; spacing: mm of (row, column, slice), the axes of [H, W, Z].
    A class absent from the ground truth has no score (NaN, left out of means, as MONAI's `ignore_empty`). A class
    present but never predicted gets Dice 0 and, where MONAI's HD95 is undefined (an empty prediction), the
    volume's diagonal in mm: the worst distance possible, so a missed organ is never left out of the mean HD95.
    """
    p, y = _one_hot(pred, num_classes), _one_hot(label, num_classes)
    spacing = [float(s) for s in spacing]
    dice = DiceMetric(include_background=False, reduction="none", ignore_empty=True)(p, y)[0].numpy()
    with warnings.catch_warnings():  # MONAI warns about every empty class, which is handled below
        warnings.simplefilter("ignore")
        hd95 = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(p, y, spacing=spacing)
    hd95 = hd95[0].numpy().astype(np.float64)
    present = y[0, 1:].flatten(1).sum(1).numpy() > 0
    diagonal = float(np.linalg.norm(np.array(p.shape[2:]) * np.array(spacing)))
    hd95 = np.where(present & ~np.isfinite(hd95), diagonal, hd95)
    return {"dice": np.where(present, dice, np.nan), "hd95": np.where(present, hd95, np.nan)}


def summarize(scores: list[dict[str, np.ndarray]], class_names: list[str]) -> dict[str, float]:
    """Means over volumes, per class (`dice_<name>`, `hd95_<name>`) and over the classes (`dice`, `hd95`)."""
    out = {}
    for metric in ("dice", "hd95"):
        table = np.stack([s[metric] for s in scores])  # [volumes, classes]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a class absent from every volume: NaN
            per_class = np.nanmean(table, axis=0)
        out[metric] = float(np.nanmean(per_class))
        out.update({f"{metric}_{name}": float(v) for name, v in zip(class_names[1:], per_class)})
    return out

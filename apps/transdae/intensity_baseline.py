"""A context-free baseline: each pixel classified by its intensity alone, with the rule the training slices give
(a histogram of intensities per class, the most frequent class in each bin), scored per volume as the models
are. On the smooth MNI152 template grey and white matter are almost pure intensity; what a model adds over this
is context (CSF in sulci, partial volumes). Run: `python -m apps.transdae.intensity_baseline [img_size]`."""

from __future__ import annotations

import sys

import numpy as np
import torch

from apps.transdae.data import TransDAEDataModule
from common.medical.seg_metrics import summarize, volume_scores


def intensity_rule(images: np.ndarray, labels: np.ndarray, num_classes: int, bins: int = 64) -> np.ndarray:
    """[bins] class per intensity bin over [0, 1]: the most frequent class of the training pixels in that bin."""
    index = np.clip((images * bins).astype(int), 0, bins - 1)
    counts = np.stack([np.bincount(index[labels == k], minlength=bins) for k in range(num_classes)])
    return counts.argmax(0)


def scores(data: TransDAEDataModule, bins: int = 64) -> dict[str, dict[str, float]]:
    """{val, test: summarize(...)} of the rule fitted on data's (unaugmented) training slices."""
    train, classes = data.volumes("train"), len(data.class_names)
    rule = intensity_rule(train.images, train.labels, classes, bins)
    out = {}
    for split in ("val", "test"):
        volumes = data.volumes(split)
        pred = [torch.as_tensor(rule[np.clip((v["image"].numpy() * bins).astype(int), 0, bins - 1)]) for v in volumes]
        per_volume = [volume_scores(p, v["label"], classes, v["spacing"]) for p, v in zip(pred, volumes)]
        out[split] = summarize(per_volume, data.class_names)
    return out


if __name__ == "__main__":
    data = TransDAEDataModule(img_size=int(sys.argv[1]) if len(sys.argv) > 1 else 64, augment=False)
    data.prepare_data()
    data.setup()
    for split, summary in scores(data).items():
        print(split, {k: round(v, 3) for k, v in summary.items()})

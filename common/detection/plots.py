"""Detections drawn on images: one picture for predict, a grid of test images for the run's plots folder."""

from __future__ import annotations

from pathlib import Path

import matplotlib.patches as mpatches
import matplotlib.pyplot as plt
import numpy as np
import torch

from common.utils.figures import save_figure
from common.utils.modes import eval_mode

COLOURS = plt.get_cmap("tab10").colors


def draw_detections(ax, image, detections: list[dict], truth: list[dict] | None = None, title: str = "") -> None:
    """Draw on `ax`: the image, ground-truth boxes dashed white, detections in their class colour with label and score.

    detections: [{"bbox": xywh abs, "label": int, "name": str, "score": float}]; truth: [{"bbox", "name"}].
    """
    ax.imshow(np.asarray(image))
    for obj in truth or []:
        x, y, w, h = obj["bbox"]
        ax.add_patch(mpatches.Rectangle((x, y), w, h, fill=False, edgecolor="white", linestyle="--", linewidth=1))
    for det in detections:
        x, y, w, h = det["bbox"]
        colour = COLOURS[int(det["label"]) % len(COLOURS)]
        ax.add_patch(mpatches.Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.5))
        ax.text(
            x, y, f"{det['name']} {det['score']:.2f}", fontsize=6, color="white", va="bottom",
            bbox={"facecolor": colour, "alpha": 0.8, "pad": 1, "edgecolor": "none"},
        )  # fmt: skip
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def detections_from(result: dict, class_names: list[str], threshold: float) -> list[dict]:
    """postprocess() output of one image -> the drawable/JSON list of detections with score >= threshold."""
    keep = result["scores"] >= threshold
    boxes = result["boxes"][keep].tolist()
    out = []
    for (x0, y0, x1, y1), label, score in zip(boxes, result["labels"][keep].tolist(), result["scores"][keep].tolist()):
        name = class_names[label] if label < len(class_names) else str(label)
        out.append({"bbox": [x0, y0, x1 - x0, y1 - y0], "label": int(label), "name": name, "score": float(score)})
    return out


@torch.no_grad()
def detection_grid(
    model, dataset, class_names: list[str], path: Path, n: int = 8, threshold: float = 0.3, num_top: int = 100
) -> Path:
    """The first `n` images of `dataset` (a COCODetection with its eval transform) with detections and truth."""
    from common.detection.postprocess import postprocess
    from common.detection.transforms import collate

    items = [dataset[i] for i in range(min(n, len(dataset)))]
    images, masks, targets = collate(items)
    device = next(model.parameters()).device
    with eval_mode(model):
        logits, boxes = model(images.to(device), masks.to(device))
    orig = torch.stack([t["orig_size"] for t in targets]).to(device)
    results = postprocess(logits, boxes, orig, num_top)
    cols = 4
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
    for ax, target, result in zip(axes.flat, targets, results):
        image_id = target["image_id"]
        gt_boxes, gt_labels = dataset.annotations(image_id)
        truth = [
            {"bbox": [x0, y0, x1 - x0, y1 - y0], "name": class_names[lab]}
            for (x0, y0, x1, y1), lab in zip(gt_boxes.tolist(), gt_labels.tolist())
        ]
        detections = detections_from({k: v.cpu() for k, v in result.items()}, class_names, threshold)
        draw_detections(
            ax, dataset.load_image(image_id), detections, truth, f"image {image_id}: {len(detections)} found"
        )
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    fig.suptitle(f"test detections (score >= {threshold}); dashed: ground truth", fontsize=9)
    return save_figure(fig, path)

"""From the detector's raw outputs to detections in original-image pixels (DINO / Deformable-DETR's PostProcess).

Sigmoid classification has no background class, so one query may yield several (class, score) pairs: the
top-k is taken over all queries x classes jointly, as in Deformable DETR and DINO, not per query.
"""

from __future__ import annotations

import torch
from torchvision.ops import box_convert


@torch.no_grad()
def postprocess(
    logits: torch.Tensor, boxes: torch.Tensor, orig_sizes: torch.Tensor, num_top: int = 100
) -> list[dict[str, torch.Tensor]]:
    """Per image the `num_top` best (query, class) pairs.

    Args:
        logits: [B, Q, C] classification logits (sigmoid scores are taken here).
        boxes: [B, Q, 4] normalised cxcywh, relative to the unpadded image.
        orig_sizes: [B, 2] (h, w) of the original images: boxes are scaled to them.
        num_top: detections kept per image (at most Q x C).
    Returns: one dict per image: `scores` [k] descending, `labels` [k] int64 (contiguous class index),
        `boxes` [k, 4] absolute xyxy pixels of the original image, clipped to it.
    """
    batch, queries, classes = logits.shape
    k = min(int(num_top), queries * classes)
    probs = logits.sigmoid().flatten(1)
    scores, flat = probs.topk(k, dim=1)
    query = torch.div(flat, classes, rounding_mode="floor")
    labels = flat % classes
    xyxy = box_convert(boxes, "cxcywh", "xyxy")
    xyxy = torch.gather(xyxy, 1, query.unsqueeze(-1).expand(-1, -1, 4))
    h, w = orig_sizes.to(xyxy).unbind(1)
    scale = torch.stack([w, h, w, h], 1)[:, None, :]
    xyxy = xyxy * scale
    xyxy = torch.min(xyxy.clamp(min=0), scale)
    return [{"scores": s, "labels": lab, "boxes": b} for s, lab, b in zip(scores, labels, xyxy)]

"""DETR loss terms: sigmoid focal and IoU-aware varifocal classification, L1 and GIoU box regression.

Every term is a sum normalised by `num_boxes` (the number of ground-truth boxes, averaged over processes),
so that an image with many objects weighs more than one with few, as in DETR/DINO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import box_convert, generalized_box_iou_loss, sigmoid_focal_loss


def focal_loss(logits: torch.Tensor, onehot: torch.Tensor, num_boxes: float, alpha=0.25, gamma=2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017) summed over queries and classes, divided by `num_boxes`.

    logits, onehot: [..., C]; onehot is 1 for the matched class of a matched query, else 0.
    """
    loss = sigmoid_focal_loss(logits, onehot.to(logits.dtype), alpha=alpha, gamma=gamma, reduction="sum")
    return loss / num_boxes


def varifocal_loss(
    logits: torch.Tensor, onehot: torch.Tensor, iou: torch.Tensor, num_boxes: float, alpha=0.25, gamma=2.0
) -> torch.Tensor:
    """IoU-aware classification loss of Relation-DETR (`vari_sigmoid_focal_loss`, after VarifocalNet/RT-DETR).

    The positive class of a matched query has the soft target q = IoU(matched box, its target) and weight q;
    every other entry has target 0 and the focal down-weighting (1 - alpha) * p**gamma, with p detached:
        loss = sum BCE(logit, q * onehot) * (q * onehot + (1 - alpha) * p**gamma * (1 - onehot)) / num_boxes

    logits, onehot: [..., C]; iou: [...] (the query's IoU with its target, 0 for unmatched queries; it is
    detached here because the score should follow localisation quality, not push the boxes).
    """
    prob = logits.sigmoid().detach()
    target = onehot.to(logits.dtype) * iou.detach().unsqueeze(-1).to(logits.dtype)
    weight = (1 - alpha) * prob.pow(gamma) * (1 - onehot.to(logits.dtype)) + target
    loss = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum")
    return loss / num_boxes


def l1_box_loss(boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Sum of |cx, cy, w, h| differences of matched pairs [n, 4], divided by `num_boxes`."""
    return F.l1_loss(boxes, target_boxes, reduction="sum") / num_boxes


def giou_box_loss(boxes: torch.Tensor, target_boxes: torch.Tensor, num_boxes: float) -> torch.Tensor:
    """Sum of 1 - GIoU over matched pairs [n, 4] (normalised cxcywh), divided by `num_boxes`."""
    if boxes.numel() == 0:
        return boxes.sum() * 0.0  # keeps the graph (and DDP's parameter bookkeeping) intact
    xyxy, target_xyxy = box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")
    return generalized_box_iou_loss(xyxy, target_xyxy, reduction="sum") / num_boxes

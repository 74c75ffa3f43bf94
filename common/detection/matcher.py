"""Hungarian matching of predicted boxes to ground truth (DETR's set assignment, DINO's costs).

The cost of assigning prediction q to target t is
    cost_class * focal_cost(q, label_t) + cost_bbox * |box_q - box_t|_1 - cost_giou * GIoU(box_q, box_t),
computed for the whole batch at once and split per image before `scipy.optimize.linear_sum_assignment`.
`num_repeats=k` matches against each image's targets repeated k times: every target may then take up to k
predictions (the one-to-many assignment of Relation-DETR's hybrid branch and of H-DETR).
"""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import box_convert, generalized_box_iou

from common.errors import check_range


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25, gamma: float = 2.0):
    """[N, C] logits, [T] labels -> [N, T]: the focal loss of calling q positive for label t, minus the
    focal loss of calling it negative (Deformable-DETR's classification cost)."""
    prob = logits.sigmoid()
    neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    return pos[:, labels] - neg[:, labels]


class HungarianMatcher(nn.Module):
    """One-to-one (or, with `num_repeats`, one-to-many) assignment of predictions to targets.

    Args:
        cost_class, cost_bbox, cost_giou: weights of the focal class cost, the L1 box cost and the negative
            GIoU cost (DINO and Relation-DETR: 2, 5, 2).
        alpha, gamma: focal parameters of the class cost.

    Call: `matcher(outputs, targets, num_repeats=1)` with outputs {pred_logits [B,Q,C], pred_boxes [B,Q,4]}
    (boxes normalised cxcywh) and targets a list of B dicts with `labels` [n] and `boxes` [n,4]. Returns a
    list of B pairs (pred_idx, target_idx) of int64 tensors on the predictions' device; target_idx always
    indexes the original (unrepeated) targets.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0, alpha=0.25, gamma=2.0):
        super().__init__()
        for key, value in (("cost_class", cost_class), ("cost_bbox", cost_bbox), ("cost_giou", cost_giou)):
            check_range(key, value, 0.0)
        if cost_class == cost_bbox == cost_giou == 0:
            raise ValueError("HungarianMatcher: at least one cost weight must be positive")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, gt_boxes: torch.Tensor):
        """[N, C], [N, 4], [T], [T, 4] -> [N, T] assignment cost."""
        cost = self.cost_class * focal_class_cost(logits.float(), labels, self.alpha, self.gamma)
        cost = cost + self.cost_bbox * torch.cdist(boxes.float(), gt_boxes.float(), p=1)
        giou = generalized_box_iou(
            box_convert(boxes.float(), "cxcywh", "xyxy"), box_convert(gt_boxes, "cxcywh", "xyxy")
        )
        return cost - self.cost_giou * giou

    @torch.no_grad()
    def forward(self, outputs: dict, targets: list[dict], num_repeats: int = 1):
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        batch, num_queries = logits.shape[:2]
        device = logits.device
        sizes = [len(t["boxes"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64, device=device)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in range(batch)]
        # One cost matrix for the whole batch (one call per cost term), then one block per image.
        labels = torch.cat([t["labels"] for t in targets]).to(device)
        gt_boxes = torch.cat([t["boxes"] for t in targets]).to(device)
        cost = self.cost_matrix(logits.flatten(0, 1), boxes.flatten(0, 1), labels, gt_boxes)
        cost = cost.view(batch, num_queries, -1).cpu()
        indices = []
        for b, block in enumerate(cost.split(sizes, dim=-1)):
            if sizes[b] == 0:
                indices.append((empty, empty))
                continue
            block = block[b]
            if not torch.isfinite(block).all():  # a NaN prediction must fail loudly, not match at random
                raise FloatingPointError("HungarianMatcher: non-finite cost (NaN or inf in predictions)")
            rows, cols = linear_sum_assignment(block.repeat(1, num_repeats).numpy())
            cols = cols % sizes[b]  # repeated copies point back at the original target
            order = cols.argsort(kind="stable")
            indices.append(
                (
                    torch.as_tensor(rows[order], dtype=torch.int64, device=device),
                    torch.as_tensor(cols[order], dtype=torch.int64, device=device),
                )
            )
        return indices

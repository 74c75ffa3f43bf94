"""Relation-DETR's loss: the shared set criterion (IoU-aware varifocal classification) plus the hybrid
branch's one-to-many losses, as a subclass rather than a copy."""

from __future__ import annotations

import torch
from torch import nn

from common.detection.criterion import SetCriterion, mean_num_boxes
from common.errors import check_range


class HybridSetCriterion(SetCriterion):
    """SetCriterion + the same terms on `outputs["hybrid_outputs"]`, matched one-to-many.

    Each target may take `hybrid_assign` hybrid queries (the paper: 6; Hungarian matching against the
    targets repeated that many times), so the hybrid branch gets many positives per object while the
    main branch stays one-to-one (no duplicates at inference). Hybrid terms end in `_hybrid`, use the
    same weights times `weight_hybrid`, and are normalised by num_boxes * hybrid_assign (the repeated
    targets' count, as the paper's code does).

    Args: those of SetCriterion (class_loss defaults to "varifocal" here), plus hybrid_assign and
    weight_hybrid.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        hybrid_assign: int = 6,
        weight_hybrid: float = 1.0,
        class_loss: str = "varifocal",
        **kwargs,
    ):
        super().__init__(num_classes, matcher, class_loss=class_loss, **kwargs)
        check_range("hybrid_assign", hybrid_assign, 1)
        check_range("weight_hybrid", weight_hybrid, 0.0)
        self.hybrid_assign, self.weight_hybrid = int(hybrid_assign), float(weight_hybrid)

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        losses = super().forward(outputs, targets)
        hybrid = outputs.get("hybrid_outputs")
        if hybrid is not None and self.weight_hybrid > 0:
            num_boxes = mean_num_boxes(targets, hybrid["pred_logits"].device) * self.hybrid_assign
            terms = self.matching_losses(hybrid, targets, num_boxes, "_hybrid", num_repeats=self.hybrid_assign)
            losses.update({k: self.weight_hybrid * v for k, v in terms.items()})
        return losses

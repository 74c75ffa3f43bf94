"""Focus-DETR's loss: the shared DINO set criterion plus the foreground "select" loss on the token scores."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert, sigmoid_focal_loss

from common.detection.criterion import SetCriterion
from common.errors import ConfigError, check_range

# The official FCOS-style ranges of max(l, t, r, b) in input pixels for strides 8, 16, 32, 64 (~800 px images).
PAPER_SIZE_RANGES = ((-1.0, 64.0), (64.0, 128.0), (128.0, 256.0), (256.0, float("inf")))


def foreground_labels(
    centres: torch.Tensor,
    levels: torch.Tensor,
    targets: list[dict],
    size_ranges: list[tuple[float, float]],
) -> torch.Tensor:
    """FCOS-style binary labels: a token is foreground when its centre lies inside a target box and the
    largest distance from the centre to that box's sides, in input pixels, is within its level's range.

    Shapes: centres [B, N, 2] (x, y) normalised by each image's unpadded size; levels [N] long; targets with
    `boxes` [n, 4] normalised cxcywh and `size` (h, w) in pixels -> labels [B, N] float in {0, 1}.
    """
    ranges = torch.tensor(size_ranges, dtype=centres.dtype, device=centres.device)[levels]  # [N, 2]
    labels = torch.zeros(centres.shape[:2], dtype=centres.dtype, device=centres.device)
    for b, target in enumerate(targets):
        boxes = target["boxes"].to(centres)
        if len(boxes) == 0:
            continue
        h, w = (float(v) for v in target["size"])
        x0, y0, x1, y1 = box_convert(boxes, "cxcywh", "xyxy").unbind(-1)  # [n] each
        x, y = centres[b, :, 0:1], centres[b, :, 1:2]  # [N, 1]
        dist = torch.stack([(x - x0) * w, (y - y0) * h, (x1 - x) * w, (y1 - y) * h], -1)  # [N, n, 4]
        inside = dist.min(-1).values > 0
        reach = dist.max(-1).values
        in_range = (reach >= ranges[:, 0:1]) & (reach <= ranges[:, 1:2])
        labels[b] = (inside & in_range).any(-1).to(labels.dtype)
    return labels


class FocusCriterion(SetCriterion):
    """`SetCriterion` + `loss_select`: sigmoid focal loss (alpha, gamma as the class loss) on the encoder's
    foreground logits of the real tokens against `foreground_labels`, summed and divided by the number of
    foreground tokens; weight 1.5 in the paper.

    Args (besides SetCriterion's): weight_select; size_ranges: per-level [low, high] of max(l, t, r, b) in
    input pixels (default the paper's for ~800 px inputs; scale them with the input size).
    """

    def __init__(self, *args, weight_select: float = 1.5, size_ranges=None, **kwargs):
        super().__init__(*args, **kwargs)
        check_range("weight_select", weight_select, 0.0)
        ranges = [tuple(float(v) for v in r) for r in (size_ranges or PAPER_SIZE_RANGES)]
        if not all(len(r) == 2 and r[0] < r[1] for r in ranges):
            raise ConfigError("size_ranges", size_ranges, "a list of [low, high] pairs, one per level")
        self.weight_select, self.size_ranges = float(weight_select), ranges

    def select_loss(self, outputs: dict, targets: list[dict]) -> torch.Tensor:
        levels = outputs["fg_levels"]
        if int(levels.max()) >= len(self.size_ranges):
            raise ConfigError("size_ranges", self.size_ranges, f"{int(levels.max()) + 1} ranges (one per level)")
        labels = foreground_labels(outputs["fg_centres"], levels, targets, self.size_ranges)
        real = ~outputs["fg_padding"]
        logits = outputs["fg_logits"][real]
        num_pos = max(float(labels[real].sum()), 1.0)
        loss = sigmoid_focal_loss(logits, labels[real], alpha=self.alpha, gamma=self.gamma, reduction="sum")
        return loss / num_pos

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        losses = super().forward(outputs, targets)
        if "fg_logits" in outputs:
            losses["loss_select"] = self.weight_select * self.select_loss(outputs, targets)
        return losses

"""The one DETR set criterion: Hungarian-matched class + box losses on every output of a DINO-style model.

Outputs it reads (see docs of `forward`): the last decoder layer (`pred_logits`, `pred_boxes`), every
earlier layer (`aux_outputs`), the two-stage proposals (`enc_outputs`) and the denoising queries
(`dn_outputs`, matched by construction through `dn_meta`). Variants subclass it and add terms (Focus-DETR's
foreground-select loss, Relation-DETR's one-to-many hybrid branch) instead of copying it, which is the
mistake detrex made with five copies of one criterion.

Keys of the returned dict: `loss_class`, `loss_bbox`, `loss_giou`, each with a suffix naming its source:
none (last layer), `_<i>` (decoder layer i), `_enc`, `_dn`, `_dn_<i>`. Values are already weighted.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torchvision.ops import box_convert, box_iou

from common.detection.losses import focal_loss, giou_box_loss, l1_box_loss, varifocal_loss
from common.errors import check_choice, check_range

TERMS = ("class", "bbox", "giou")


def mean_num_boxes(targets: list[dict], device) -> float:
    """The number of target boxes in the batch, averaged over DDP processes when they run, at least 1."""
    num = torch.tensor([float(sum(len(t["boxes"]) for t in targets))], device=device)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num)
        num = num / dist.get_world_size()
    return max(num.item(), 1.0)


def dn_indices(dn_meta: dict, targets: list[dict], device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pairs (dn query, target) known by construction: the positive copy of target j in group g sits at
    `g * group_size + j` (see `common.detection.denoising`); negative copies stay unmatched."""
    groups, group_size = dn_meta["num_groups"], dn_meta["group_size"]
    pairs = []
    for t in targets:
        n = len(t["boxes"])
        tgt = torch.arange(n, device=device).repeat(groups)
        src = (torch.arange(groups, device=device) * group_size).repeat_interleave(n) + tgt
        pairs.append((src, tgt))
    return pairs


class SetCriterion(nn.Module):
    """DETR/DINO set loss with focal or Relation-DETR's IoU-aware (varifocal) classification.

    Args:
        num_classes: categories C (sigmoid, no background class).
        matcher: a `HungarianMatcher` (or anything with its call signature).
        weight_class, weight_bbox, weight_giou: loss weights (DINO/Relation-DETR: 1, 5, 2), applied to the
            same term of every source (last layer, aux, enc, dn).
        class_loss: "focal" (DINO, Focus-DETR) or "varifocal" (Relation-DETR: positives' target is the IoU
            of the matched box).
        alpha, gamma: focal parameters.
        aux_loss, enc_loss, dn_loss: switch the intermediate-layer, two-stage and denoising losses.
    """

    def __init__(
        self,
        num_classes: int,
        matcher: nn.Module,
        weight_class: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        class_loss: str = "focal",
        alpha: float = 0.25,
        gamma: float = 2.0,
        aux_loss: bool = True,
        enc_loss: bool = True,
        dn_loss: bool = True,
    ):
        super().__init__()
        check_range("num_classes", num_classes, 1)
        check_choice("class_loss", class_loss, ("focal", "varifocal"))
        for key, value in (("weight_class", weight_class), ("weight_bbox", weight_bbox), ("weight_giou", weight_giou)):
            check_range(key, value, 0.0)
        self.num_classes, self.matcher, self.class_loss = num_classes, matcher, class_loss
        self.weights = {"class": float(weight_class), "bbox": float(weight_bbox), "giou": float(weight_giou)}
        self.alpha, self.gamma = alpha, gamma
        self.aux_loss, self.enc_loss, self.dn_loss = aux_loss, enc_loss, dn_loss

    # ---- one source: match (unless given), then class + boxes, unweighted ----
    def source_losses(self, out: dict, targets: list[dict], num_boxes: float, indices=None, num_repeats=1) -> dict:
        """{"class", "bbox", "giou"} of one output dict; `indices` skips the matching (denoising);
        `num_repeats` > 1 lets each target take that many predictions (one-to-many)."""
        if indices is None:
            repeat = {"num_repeats": num_repeats} if num_repeats > 1 else {}  # plain matchers need not know it
            indices = self.matcher(out, targets, **repeat)
        logits, boxes = out["pred_logits"].float(), out["pred_boxes"].float()  # losses in fp32 under autocast
        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        matched = boxes[batch_idx, src_idx]
        target_boxes = torch.cat([t["boxes"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(matched)
        target_labels = torch.cat([t["labels"][tgt] for t, (_, tgt) in zip(targets, indices)]).to(logits.device)
        onehot = torch.zeros_like(logits)
        onehot[batch_idx, src_idx, target_labels] = 1.0
        if self.class_loss == "focal":
            loss_class = focal_loss(logits, onehot, num_boxes, self.alpha, self.gamma)
        else:
            iou = torch.zeros(logits.shape[:2], dtype=logits.dtype, device=logits.device)
            if len(matched):
                xyxy = box_convert(matched.detach(), "cxcywh", "xyxy")
                iou[batch_idx, src_idx] = box_iou(xyxy, box_convert(target_boxes, "cxcywh", "xyxy")).diagonal()
            loss_class = varifocal_loss(logits, onehot, iou, num_boxes, self.alpha, self.gamma)
        return {
            "class": loss_class,
            "bbox": l1_box_loss(matched, target_boxes, num_boxes),
            "giou": giou_box_loss(matched, target_boxes, num_boxes),
        }

    def weighted(self, terms: dict, suffix: str = "") -> dict:
        """{"class": x, ...} -> {"loss_class<suffix>": weight_class * x, ...}."""
        return {f"loss_{k}{suffix}": self.weights[k] * v for k, v in terms.items()}

    # ---- all sources of one forward pass ----
    def matching_losses(
        self, outputs: dict, targets: list[dict], num_boxes: float, suffix: str = "", num_repeats: int = 1
    ) -> dict:
        """Last layer, earlier layers and two-stage proposals of one query set, Hungarian-matched
        (one-to-many with `num_repeats` > 1); keys end in `suffix`."""
        losses = self.weighted(self.source_losses(outputs, targets, num_boxes, num_repeats=num_repeats), suffix)
        if self.aux_loss:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                aux_terms = self.source_losses(aux, targets, num_boxes, num_repeats=num_repeats)
                losses.update(self.weighted(aux_terms, f"_{i}{suffix}"))
        if self.enc_loss and outputs.get("enc_outputs") is not None:
            enc_terms = self.source_losses(outputs["enc_outputs"], targets, num_boxes, num_repeats=num_repeats)
            losses.update(self.weighted(enc_terms, f"_enc{suffix}"))
        return losses

    def denoising_losses(self, outputs: dict, targets: list[dict], num_boxes: float) -> dict:
        """The denoising queries' losses, matched by construction; normalised per group like DINO."""
        dn_out, dn_meta = outputs.get("dn_outputs"), outputs.get("dn_meta")
        if not self.dn_loss or dn_out is None or dn_meta is None:
            return {}
        indices = dn_indices(dn_meta, targets, dn_out["pred_logits"].device)
        num = num_boxes * dn_meta["num_groups"]
        losses = self.weighted(self.source_losses(dn_out, targets, num, indices), "_dn")
        if self.aux_loss:
            for i, aux in enumerate(dn_out.get("aux_outputs", [])):
                losses.update(self.weighted(self.source_losses(aux, targets, num, indices), f"_dn_{i}"))
        return losses

    def forward(self, outputs: dict, targets: list[dict]) -> dict[str, torch.Tensor]:
        """outputs: the model's `forward_train` dict; targets: per-image {labels, boxes}. Weighted terms."""
        num_boxes = mean_num_boxes(targets, outputs["pred_logits"].device)
        losses = self.matching_losses(outputs, targets, num_boxes)
        losses.update(self.denoising_losses(outputs, targets, num_boxes))
        return losses

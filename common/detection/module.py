"""DetectionModule: the LightningModule of the DETR apps (focus_detr, relation_detr).

Training: `model.forward_train(images, masks, targets)` -> the criterion's dict of weighted loss terms, summed
into `train/loss`. Logged per epoch: the last decoder layer's terms as they are (`train/loss_class`, ...,
and variant terms such as `train/loss_select`) and the other sources summed per source
(`train/loss_aux`, `train/loss_enc`, `train/loss_dn`, `train/loss_hybrid`), so the curves stay readable.
Validation and test: `model(images, masks)` -> postprocess (top-`num_top` over queries x classes, boxes in
original pixels) -> COCOeval (evaluator.py) against the datamodule's ground truth (`coco_gt(split)`; without
a datamodule, against the batch targets), logged as `val/map`, `val/map_50`, ... and `test/...`; a metric that
COCOeval leaves undefined (e.g. `map_large` when no object is large) is not logged. Under DDP the ranks'
detections (and that fallback ground truth) are merged by image id before COCOeval, so an image that
DistributedSampler's padding hands to two ranks counts once.

Optimiser (`_partial_`, default AdamW lr 1e-4, wd 1e-4 in the config): parameters whose name contains
`backbone` train at `backbone_lr_mult` x lr (0.1 in DINO, Focus-DETR, Relation-DETR); `lr_mults` adds other
name fragments (e.g. Deformable DETR's {sampling_offsets: 0.1, reference_points: 0.1}). Gradients are clipped
to `clip_max_norm` (0.1, DETR's value) unless the trainer sets its own `gradient_clip_val`. The scheduler
partial works as in the vision module: with a `total_steps` argument it is stepped per step, else per epoch
(e.g. MultiStepLR with epoch milestones).
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch
from torch import nn

from common.detection.evaluator import CocoEvaluator, coco_from_dict, merge_over_ranks
from common.detection.postprocess import postprocess
from common.errors import check_range
from common.utils.schedulers import with_scheduler


def loss_group(key: str) -> str:
    """The name a loss term is logged under: last-layer terms as they are, others summed per source.

    loss_class -> loss_class; loss_class_3 -> loss_aux; loss_giou_enc -> loss_enc; loss_bbox_dn_2 -> loss_dn;
    loss_class_hybrid_1 -> loss_hybrid; loss_select -> loss_select.
    """
    parts = key.split("_")
    if len(parts) <= 2:
        return key
    source = [p for p in parts[2:] if not p.isdigit()]
    return "_".join(["loss", *(source or ["aux"])])


def targets_as_coco(targets: list[dict]) -> tuple[list[dict], list[dict]]:
    """COCO images and annotations (original pixels, category id = label) from eval-transformed targets."""
    images, annotations = [], []
    for t in targets:
        h, w = (int(v) for v in t["orig_size"])
        images.append({"id": int(t["image_id"]), "width": w, "height": h})
        boxes = t["boxes"].detach().float().cpu() * torch.tensor([w, h, w, h], dtype=torch.float32)
        for (cx, cy, bw, bh), label in zip(boxes.tolist(), t["labels"].tolist()):
            annotations.append(
                {"image_id": int(t["image_id"]), "category_id": int(label), "bbox": [cx - bw / 2, cy - bh / 2, bw, bh]}
            )
    return images, annotations


class DetectionModule(L.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        criterion: nn.Module,
        optimizer,
        scheduler=None,
        backbone_lr_mult: float = 0.1,
        lr_mults: dict | None = None,
        clip_max_norm: float = 0.1,
        num_top: int = 100,
        plot_images: int = 8,
        plot_threshold: float = 0.3,
    ):
        """Args beyond the module docstring:
        model: the detector (see docs of the detection interfaces: forward, forward_train, num_classes).
        criterion: the set criterion, `criterion(outputs, targets) -> {term: weighted loss}`.
        num_top: detections kept per image for COCOeval (100 = COCO's maxDets).
        plot_images, plot_threshold: the test images drawn by make_plots and the score a box needs to be drawn.
        """
        super().__init__()
        check_range("backbone_lr_mult", backbone_lr_mult, 0.0)
        check_range("clip_max_norm", clip_max_norm, 0.0)
        check_range("num_top", num_top, 1)
        check_range("plot_images", plot_images, 0)
        check_range("plot_threshold", plot_threshold, 0.0, 1.0)
        for fragment, mult in (lr_mults or {}).items():
            check_range(f"lr_mults.{fragment}", mult, 0.0)
        self.save_hyperparameters(ignore=["model", "criterion", "optimizer", "scheduler"])
        self.model, self.criterion = model, criterion
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.lr_mults = {"backbone": float(backbone_lr_mult), **{k: float(v) for k, v in (lr_mults or {}).items()}}
        self.clip_max_norm, self.num_top = float(clip_max_norm), int(num_top)
        self.plot_images, self.plot_threshold = int(plot_images), float(plot_threshold)
        self._evaluators: dict[str, CocoEvaluator] = {}
        self._fallback_gt: dict[str, dict[int, tuple[dict, list]]] = {}  # split -> image id -> (image, annotations)

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None):
        return self.model(images, masks)

    # ---- training ---------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        images, masks, targets = batch
        outputs = self.model.forward_train(images, masks, targets)
        losses = self.criterion(outputs, targets)
        loss = sum(losses.values())
        groups: dict[str, torch.Tensor] = {}
        for key, value in losses.items():
            name = loss_group(key)
            groups[name] = groups.get(name, 0.0) + value.detach()
        kw = {"on_step": False, "on_epoch": True, "batch_size": len(images)}
        self.log_dict({f"train/{k}": v for k, v in groups.items()}, **kw)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """DETR clips the gradient norm at 0.1; a trainer-level gradient_clip_val, when set, wins."""
        value = gradient_clip_val if gradient_clip_val is not None else self.clip_max_norm
        if value:
            self.clip_gradients(
                optimizer, gradient_clip_val=value, gradient_clip_algorithm=gradient_clip_algorithm or "norm"
            )

    # ---- evaluation -------------------------------------------------------------------------------
    def _datamodule(self):
        trainer = getattr(self, "_trainer", None)
        return getattr(trainer, "datamodule", None) if trainer is not None else None

    def _start_eval(self, split: str) -> None:
        self._fallback_gt.pop(split, None)  # left over if an earlier evaluation was interrupted
        dm = self._datamodule()
        if dm is not None and hasattr(dm, "coco_gt"):
            coco_gt, _ = dm.coco_gt(split)
            self._evaluators[split] = CocoEvaluator(coco_gt)
        else:  # ground truth from the batches themselves (eval targets hold every non-crowd box)
            self._fallback_gt[split] = {}
            self._evaluators[split] = CocoEvaluator(coco_from_dict({"images": [], "annotations": []}))

    def _label_to_category(self, split: str):
        """Contiguous label -> COCO category id (the datamodule's); the fallback ground truth uses labels as ids."""
        dm = self._datamodule()
        if split in self._fallback_gt or dm is None:
            return None
        return list(dm.label_to_category)

    def _eval_step(self, batch, split: str) -> None:
        images, masks, targets = batch
        logits, boxes = self.model(images, masks)
        orig = torch.stack([t["orig_size"] for t in targets]).to(boxes.device)
        results = postprocess(logits, boxes, orig, self.num_top)
        if split in self._fallback_gt:
            imgs, anns = targets_as_coco(targets)
            for image in imgs:
                own = [a for a in anns if a["image_id"] == image["id"]]
                self._fallback_gt[split][image["id"]] = (image, own)
        self._evaluators[split].update([t["image_id"] for t in targets], results, self._label_to_category(split))

    def _end_eval(self, split: str) -> None:
        evaluator = self._evaluators.pop(split)
        if split in self._fallback_gt:  # every rank's images, each once
            per_image = merge_over_ranks(self._fallback_gt.pop(split))
            images = [image for image, _ in per_image.values()]
            annotations = [a for _, anns in per_image.values() for a in anns]
            categories = [{"id": i, "name": str(i)} for i in range(int(self.model.num_classes))]
            evaluator.coco_gt = coco_from_dict({"images": images, "annotations": annotations, "categories": categories})
        evaluator.gather()
        metrics = evaluator.compute()
        # Every rank holds the gathered detections and logs the same numbers (sync_dist averages equal values).
        # Undefined metrics (NaN: no ground truth in that area range) are not logged: NaN is not valid JSON in
        # metrics.json, and an absent `map_large` says "undefined" more plainly than a number would.
        self.log(f"{split}/map_50", metrics["map_50"], prog_bar=True, sync_dist=True)
        defined = {f"{split}/{k}": v for k, v in metrics.items() if k != "map_50" and not math.isnan(v)}
        self.log_dict(defined, sync_dist=True)

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._end_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._end_eval("test")

    # ---- optimisation -----------------------------------------------------------------------------
    def param_groups(self, base_lr: float) -> list[dict]:
        """Trainable parameters grouped by learning-rate multiplier (first matching name fragment wins)."""
        groups: dict[float, list] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            mult = next((m for fragment, m in self.lr_mults.items() if fragment in name), 1.0)
            groups.setdefault(mult, []).append(param)
        return [{"params": params, "lr": base_lr * mult, "lr_mult": mult} for mult, params in sorted(groups.items())]

    def configure_optimizers(self):
        base_lr = getattr(self.optimizer_factory, "keywords", {}).get("lr", 1e-4)
        opt = self.optimizer_factory(self.param_groups(base_lr))
        return with_scheduler(opt, self.scheduler_factory, self.trainer)

    # ---- pictures ---------------------------------------------------------------------------------
    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """The first `plot_images` test images with detections and ground truth -> plot_dir/detections.png."""
        if not self.plot_images or datamodule is None:
            return []
        from common.detection.plots import detection_grid

        datamodule.setup("test")
        path = Path(plot_dir) / "detections.png"
        names = list(datamodule.class_names)
        return [
            detection_grid(self.model, datamodule.splits["test"], names, path, self.plot_images, self.plot_threshold)
        ]

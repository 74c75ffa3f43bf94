"""ImageClassificationModule: the LightningModule of every vision app.

Loss: cross-entropy with label smoothing; with mixup/cutmix (timm.data.Mixup, which also smooths the
labels) the soft-target cross-entropy (timm.loss.SoftTargetCrossEntropy). Validation and test use
plain cross-entropy. Metrics (torchmetrics: mean loss, micro accuracy): `val/loss`, `val/acc`, `val/acc_top5`
and `test/...`; top-5 becomes top-min(5, num_classes). Under DDP the ranks' metric states are synced and the
rows Lightning's DistributedSampler repeats to pad the split are left out, so each metric is the whole split's.
Optimiser and scheduler are `_partial_` configs; weight decay skips norms, biases and the model's
`no_weight_decay()` names (timm's param_groups_weight_decay). A scheduler partial with a `total_steps` argument
gets the trainer's estimated number of optimiser steps and is stepped every step, others every epoch.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from common.data.distributed import real_rows
from common.errors import check_range
from common.utils.schedulers import with_scheduler


class ImageClassificationModule(L.LightningModule):
    def __init__(
        self,
        model: torch.nn.Module,
        optimizer,
        scheduler=None,
        mixup: float = 0.0,
        cutmix: float = 0.0,
        mixup_prob: float = 1.0,
        label_smoothing: float = 0.0,
    ):
        """Args:
        model: the classifier, `model(images [B, C, H, W]) -> logits [B, num_classes]`, with `num_classes`.
        mixup, cutmix: Beta(alpha, alpha) parameters (0 disables each).
        mixup_prob: probability that a batch is mixed at all.
        label_smoothing: epsilon of the training targets.
        """
        super().__init__()
        check_range("mixup", mixup, 0.0)
        check_range("cutmix", cutmix, 0.0)
        check_range("mixup_prob", mixup_prob, 0.0, 1.0)
        check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.num_classes = int(model.num_classes)
        self.label_smoothing = float(label_smoothing)
        self.mixup = None
        if (mixup > 0 or cutmix > 0) and mixup_prob > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup, cutmix_alpha=cutmix, prob=mixup_prob, label_smoothing=label_smoothing,
                num_classes=self.num_classes,
            )  # fmt: skip
        top_k = min(5, self.num_classes)
        for split in ("val", "test"):
            setattr(self, f"{split}_loss", MeanMetric())
            setattr(self, f"{split}_acc", MulticlassAccuracy(self.num_classes, top_k=1, average="micro"))
            setattr(self, f"{split}_acc_top5", MulticlassAccuracy(self.num_classes, top_k=top_k, average="micro"))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    def mix_batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training batch: mixed images with soft targets [B, K] under mixup/cutmix, else the labels [B]."""
        if self.mixup is not None and len(images) % 2 == 0:  # timm's Mixup pairs the batch with its reverse
            return self.mixup(images, labels)
        return images, labels

    def classification_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Soft-target cross-entropy (timm's SoftTargetCrossEntropy) for soft targets, else label-smoothed CE."""
        if targets.ndim == 2:
            return torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def training_step(self, batch, batch_idx):
        images, targets = self.mix_batch(*batch)
        loss = self.classification_loss(self.model(images), targets)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        return loss

    def _eval_step(self, batch, batch_idx: int, split: str):
        images, labels = batch
        keep = real_rows(self.trainer, batch_idx, len(labels)).to(labels.device)  # not DDP's padding repeats
        logits, labels = self.model(images)[keep], labels[keep]
        # torchmetrics states (sums and counts) are synced over the ranks at the epoch's end: the whole split, once
        loss, acc, top5 = (getattr(self, f"{split}_{name}") for name in ("loss", "acc", "acc_top5"))
        loss.update(F.cross_entropy(logits, labels, reduction="none"))
        acc.update(logits, labels)
        top5.update(logits, labels)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True)
        self.log(f"{split}/acc", acc, prog_bar=True, on_step=False, on_epoch=True)
        self.log(f"{split}/acc_top5", top5, on_step=False, on_epoch=True)

    def validation_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        self._eval_step(batch, batch_idx, "test")

    def configure_optimizers(self):
        from timm.optim import param_groups_weight_decay

        weight_decay = getattr(self.optimizer_factory, "keywords", {}).get("weight_decay", 0.0)
        skip = self.model.no_weight_decay() if hasattr(self.model, "no_weight_decay") else ()
        opt = self.optimizer_factory(param_groups_weight_decay(self.model, weight_decay, no_weight_decay_list=skip))
        return with_scheduler(opt, self.scheduler_factory, self.trainer)

    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """A grid of test images with predicted and true classes -> plot_dir/predictions.png."""
        from common.vision.plots import prediction_grid

        return [prediction_grid(self.model, datamodule, Path(plot_dir) / "predictions.png")]

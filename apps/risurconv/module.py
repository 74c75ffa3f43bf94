"""RISurConvModule: cross-entropy training (the official NLL of log-softmax), and the protocol metrics.

Classification logs `acc` (overall accuracy) and `class_acc` (mean per-class accuracy, the official pair);
part segmentation logs `miou` (instance mean IoU: per shape, the mean IoU over its category's parts, a part
absent from both truth and prediction counting 1, ShapeNetPart's rule), `class_miou` (per-category mean of
that) and `acc` (point accuracy). Predictions of parts are restricted to the shape's category. Validation
logs these under the training rotation; the test logs each under a fixed random up-axis rotation (`*_z`) and
a fixed random SO(3) rotation (`*_so3`): with the training rotation, the columns of the z/z, z/SO3 and SO3/SO3
protocols. Epoch metrics are computed from every shape of the split exactly once, also under DDP
(`common.data.distributed.SplitRows`: the sampler's padding repeats are dropped).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from common.data.distributed import SplitRows
from common.pointcloud.plots import cloud_grid
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler

KINDS = ("z", "so3")


def shape_ious(pred: torch.Tensor, target: torch.Tensor, parts: list[int]) -> torch.Tensor:
    """Mean IoU over `parts` of one shape's per-point labels (a part in neither counts 1)."""
    ious = []
    for p in parts:
        inter = ((pred == p) & (target == p)).sum()
        union = ((pred == p) | (target == p)).sum()
        ious.append(torch.tensor(1.0) if union == 0 else inter.float() / union.float())
    return torch.stack(ious).mean()


class RISurConvModule(L.LightningModule):
    def __init__(self, model, optimizer, scheduler=None, label_smoothing: float = 0.0):
        super().__init__()
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.label_smoothing = float(label_smoothing)
        self.task = getattr(model, "task", "cls")
        if self.task == "partseg":
            allowed = torch.zeros(model.num_categories, model.num_classes, dtype=torch.bool)
            for c, parts in enumerate(model.category_parts):
                allowed[c, parts] = True
            self.register_buffer("allowed", allowed, persistent=False)
        self.num_labels = model.num_categories if self.task == "partseg" else model.num_classes
        self._rows: dict[str, SplitRows] = {}  # per split (and test rotation): rows kept for the epoch

    def logits(self, batch: dict, points: torch.Tensor) -> torch.Tensor:
        return self.model(points, batch["category"]) if self.task == "partseg" else self.model(points)

    def loss(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.task == "partseg":
            return F.cross_entropy(logits.transpose(1, 2), batch["parts"], label_smoothing=self.label_smoothing)
        return F.cross_entropy(logits, batch["label"], label_smoothing=self.label_smoothing)

    def predictions(self, logits: torch.Tensor, batch: dict) -> torch.Tensor:
        if self.task == "partseg":  # only the parts of the shape's category
            mask = self.allowed[batch["label"]].unsqueeze(1)
            return logits.masked_fill(~mask, float("-inf")).argmax(-1)
        return logits.argmax(-1)

    # ---- steps ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.logits(batch, batch["points"])
        loss = self.loss(logits, batch)
        bs = batch["label"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        if self.task == "cls":
            acc = (logits.argmax(-1) == batch["label"]).float().mean()
            self.log("train/acc", acc, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def _evaluate(self, batch: dict, points: torch.Tensor, split: str, batch_idx: int) -> None:
        logits = self.logits(batch, points)
        rows = {"pred": self.predictions(logits, batch), "label": batch["label"]}
        if self.task == "partseg":  # a shape's loss is the mean over its points, as the batch loss is
            rows["loss"] = F.cross_entropy(logits.transpose(1, 2), batch["parts"], reduction="none").mean(1)
            rows["parts"] = batch["parts"]
        else:
            rows["loss"] = F.cross_entropy(logits, batch["label"], reduction="none")
        self._rows.setdefault(split, SplitRows()).add(self.trainer, batch_idx, **rows)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate(batch, batch["points"], "val", batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        for kind in KINDS:
            self._evaluate(batch, batch[f"points_{kind}"], f"test_{kind}", batch_idx)

    # ---- epoch metrics -------------------------------------------------------------------------------------
    def metrics(self, rows: dict[str, torch.Tensor]) -> dict[str, float]:
        """The protocol metrics of a split's gathered rows (each shape once, also under DDP)."""
        pred, label = rows["pred"], rows["label"]
        scores = {"loss": float(rows["loss"].double().mean())}
        if self.task == "cls":
            n = self.num_labels
            return scores | {
                "acc": float(MulticlassAccuracy(n, average="micro")(pred, label)),
                "class_acc": float(MulticlassAccuracy(n, average="macro")(pred, label)),
            }
        parts = rows["parts"]
        ious = torch.stack([shape_ious(p, t, self.model.category_parts[c]) for p, t, c in zip(pred, parts, label)])
        per_class = [ious[label == c].mean() for c in label.unique()]
        acc = float((pred == parts).float().mean())  # point accuracy, so that val/acc monitors either task
        return scores | {"miou": float(ious.mean()), "class_miou": float(torch.stack(per_class).mean()), "acc": acc}

    def _log_epoch(self, prefix: str) -> None:
        for key in [k for k in self._rows if k.startswith(prefix) and self._rows[k]]:
            split, _, kind = key.partition("_")
            scores = self.metrics(self._rows[key].gather())
            self.log_dict({f"{split}/{name}{'_' + kind if kind else ''}": v for name, v in scores.items()})

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

    # ---- pictures ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> None:
        """Eight test shapes under their fixed SO(3) rotation with truth and prediction (parts coloured for
        part segmentation)."""
        batch = next(iter(datamodule.test_dataloader()))
        batch = {k: v[:8].to(self.device) for k, v in batch.items()}
        with eval_mode(self.model):
            pred = self.predictions(self.logits(batch, batch["points_so3"]), batch).cpu()
        names = self.model.class_names
        xyz = batch["points_so3"][..., :3].cpu().numpy()
        if self.task == "cls":
            titles = [f"true {names[t]}\npred {names[p]}" for t, p in zip(batch["label"].tolist(), pred.tolist())]
            cloud_grid(list(xyz), titles, Path(plot_dir) / "test_so3.png")
        else:
            titles = [names[t] for t in batch["label"].tolist()]
            cloud_grid(list(xyz), titles, Path(plot_dir) / "test_so3_parts.png", values=list(np.asarray(pred)),
                       cmap="tab20")  # fmt: skip

"""TransDAEModule: the paper's loss (0.4 cross-entropy + 0.6 Dice, MONAI's DiceCELoss), SGD with poly decay,
and evaluation per volume: each validation or test volume is predicted slice by slice, stacked, and scored as a
whole (MONAI's Dice and HD95 per foreground class, `common.medical.seg_metrics`), then averaged over volumes.
Under DDP each rank scores the volumes it is dealt; the scores are gathered so that every volume of the split
counts once (`common.data.distributed.SplitRows`: the sampler's padding repeats are left out).
Logged: `dice`, `hd95` (means over the foreground classes) and `dice_<class>`, `hd95_<class>`."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch.optim.lr_scheduler import LambdaLR

from common.data.distributed import SplitRows
from common.errors import check_range
from common.medical.overlay import class_bars, overlay_rows
from common.medical.seg_metrics import summarize, volume_scores
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler


class PolyLR(LambdaLR):
    """lr = base_lr * (1 - step / total_steps) ** power, stepped every optimiser step (TransUNet, DAE-Former)."""

    def __init__(self, optimizer, total_steps: int, power: float = 0.9):
        super().__init__(optimizer, lambda step: max(0.0, 1.0 - step / max(1, total_steps)) ** power)


@torch.no_grad()
def predict_volume(model, image: torch.Tensor, img_size: int, chunk: int = 32) -> torch.Tensor:
    """image [Z, H, W] -> class indices [Z, H, W]: slices resized to the model's size, predicted `chunk` at a time,
    logits resized back (bilinear) before the argmax."""
    out = []
    for part in image.split(chunk):
        x = part[:, None]
        size = x.shape[-2:]
        if tuple(size) != (img_size, img_size):
            x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False)
        logits = model(x)
        if tuple(size) != (img_size, img_size):
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        out.append(logits.argmax(1))
    return torch.cat(out)


class TransDAEModule(L.LightningModule):
    def __init__(self, model, optimizer, scheduler=None, ce_weight: float = 0.4, dice_weight: float = 0.6):
        super().__init__()
        check_range("ce_weight", ce_weight, 0.0)
        check_range("dice_weight", dice_weight, 0.0)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, lambda_ce=ce_weight, lambda_dice=dice_weight)
        self._scores = {"val": SplitRows(), "test": SplitRows()}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.model(batch["image"]), batch["label"])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch["image"]))
        return loss

    def _eval_step(self, batch: dict, batch_idx: int, split: str) -> None:
        image, label = batch["image"][0], batch["label"][0]
        pred = predict_volume(self.model, image, self.model.img_size)
        scores = volume_scores(pred.cpu(), label.cpu(), self.model.num_classes, batch["spacing"][0].tolist())
        self._scores[split].add(self.trainer, batch_idx, **{k: torch.from_numpy(v)[None] for k, v in scores.items()})

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _log_split(self, split: str) -> None:
        if not self._scores[split]:
            return
        rows = self._scores[split].gather()  # every volume of the split once, on every rank
        scores = [{k: v[i].numpy() for k, v in rows.items()} for i in range(len(rows["dice"]))]
        for name, value in summarize(scores, self.model.class_names).items():  # equal on every rank
            self.log(f"{split}/{name}", float(np.nan_to_num(value, nan=0.0)), prog_bar=name == "dice")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> None:
        """Test volumes: the middle slice and two others of each, image / truth / prediction; per-class Dice."""
        rows, scores = [], []
        with eval_mode(self.model):
            for item in datamodule.volumes("test"):
                pred = predict_volume(self.model, item["image"].to(self.device), self.model.img_size).cpu()
                scores.append(volume_scores(pred, item["label"], self.model.num_classes, item["spacing"].tolist()))
                z = len(pred)
                for k in (z // 4, z // 2, 3 * z // 4)[: 3 if len(rows) < 6 else 1]:
                    rows.append({"image": item["image"][k], "truth": item["label"][k], "prediction": pred[k]})
        names = self.model.class_names
        overlay_rows(rows[:9], names, Path(plot_dir) / "test_overlays.png", f"{self.model.arch}: held-out slices")
        summary = summarize(scores, names)
        per_class = {n: summary[f"dice_{n}"] for n in names[1:]}
        class_bars({self.model.arch: per_class}, Path(plot_dir) / "test_dice_per_class.png")

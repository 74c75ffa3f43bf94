"""NestedMorphModule: the paper's unsupervised loss, registration metrics with the identity baseline, pictures.

Loss (official `scripts/train.py`, intended form): local NCC between the warped moving and the fixed volume
(MONAI's `LocalNormalizedCrossCorrelationLoss`, 9^3 window as VoxelMorph's NCC) + lambda * Grad3d, the mean
squared forward difference of the displacement (the diffusion regulariser of VoxelMorph / NestedMorph).

Validation and test register every pair and log, per split, the means over pairs of `ssim`, `dice`, `hd95`
(mm), `sdlogj` and `folding` (% of voxels with det J <= 0), and the same three overlap metrics without
registration (`*_identity`: the moving volume as it is). Real pairs of the test split (the inter-subject
Colin27 <-> MNI152 pairs) are logged apart, with the suffix `_real`.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss
from monai.networks.blocks import Warp

from apps.nestedmorph.model import RegistrationNet
from common.errors import check_range
from common.medical.jacobian import jacobian_determinant
from common.medical.reg_metrics import overlap, pair_metrics, ssim
from common.medical.reg_plots import plot_registration
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler


def grad3d(ddf: torch.Tensor) -> torch.Tensor:
    """Grad3d (L2): mean over the three axes of the mean squared forward difference of the displacement."""
    return sum(ddf.diff(dim=d).pow(2).mean() for d in (2, 3, 4)) / 3


class NestedMorphModule(L.LightningModule):
    def __init__(self, model: RegistrationNet, optimizer, scheduler=None, smoothness: float = 1.0, ncc_window: int = 9):
        super().__init__()
        check_range("smoothness", smoothness, 0.0)
        check_range("ncc_window", ncc_window, 3)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.smoothness = float(smoothness)
        self.ncc = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_window)
        self.warp_labels = Warp("nearest", "zeros")
        self._pairs: dict[str, list[dict]] = {}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        warped, ddf = self.model(batch["moving"], batch["fixed"])
        parts = {"ncc": self.ncc(warped, batch["fixed"]), "grad": grad3d(ddf)}
        return parts["ncc"] + self.smoothness * parts["grad"], {"warped": warped, "ddf": ddf, **parts}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, out = self.loss(batch)
        bs = batch["moving"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        for key in ("ncc", "grad"):
            self.log(f"train/{key}", out[key], on_step=False, on_epoch=True, batch_size=bs)
        return loss

    # ---- evaluation, one pair per batch ---------------------------------------------------------------
    def _eval_step(self, batch: dict, split: str) -> None:
        loss, out = self.loss(batch)
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, batch_size=1)
        spacing = float(batch["spacing"][0])
        warped_labels = self.warp_labels(batch["moving_labels"].float(), out["ddf"]).round().long()
        metrics = pair_metrics(out["warped"], batch["fixed"], warped_labels, batch["fixed_labels"], out["ddf"], spacing)
        identity = {"ssim": ssim(batch["moving"], batch["fixed"])} | overlap(
            batch["moving_labels"], batch["fixed_labels"], spacing
        )
        metrics |= {f"{k}_identity": v for k, v in identity.items()}
        group = f"{split}_real" if int(batch["real"][0]) and split == "test" else split
        self._pairs.setdefault(group, []).append(metrics)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def _log_means(self, split: str) -> None:
        for group in (split, f"{split}_real"):
            pairs = self._pairs.pop(group, [])
            suffix = "_real" if group.endswith("_real") else ""
            for key in pairs[0] if pairs else ():
                values = [p[key] for p in pairs if not math.isnan(p[key])]
                self.log(f"{split}/{key}{suffix}", float(np.mean(values)) if values else math.nan)

    def on_validation_epoch_end(self) -> None:
        self._log_means("val")

    def on_test_epoch_end(self) -> None:
        self._log_means("test")

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.model.parameters())
        return with_scheduler(opt, self.scheduler_factory, self.trainer, monitor="val/dice")

    # ---- pictures -------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> None:
        """The first synthetic and the first real test pair: fixed / moving / warped / differences / grid / det."""
        test = datamodule.datasets["test"]
        picks = {"synthetic": 0, "real": next((i for i in range(len(test)) if test[i]["real"]), None)}
        with eval_mode(self.model):
            for name, index in picks.items():
                if index is None:
                    continue
                pair = test[index]
                moving, fixed = (pair[k][None].to(self.device) for k in ("moving", "fixed"))
                warped, ddf = self.model(moving, fixed)
                det = jacobian_determinant(ddf)[0]
                volumes = [t[0, 0].cpu().numpy() for t in (fixed, moving, warped)]
                path = Path(plot_dir) / f"registration_{name}.png"
                title = f"{self.model.arch}: test pair {index} ({name})"
                plot_registration(*volumes, ddf[0].cpu().numpy(), det.cpu().numpy(), path, title=title)

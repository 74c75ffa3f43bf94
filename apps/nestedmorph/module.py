"""NestedMorphModule: the paper's unsupervised loss, registration metrics with the identity baseline, pictures.

Loss (official `scripts/train.py`, intended form): local NCC between the warped moving and the fixed volume
(MONAI's `LocalNormalizedCrossCorrelationLoss`, 9^3 window as VoxelMorph's NCC) + lambda * Grad3d, the mean
squared forward difference of the displacement (the diffusion regulariser of VoxelMorph / NestedMorph).

Validation and test register every pair and log, per split, the means over pairs of `loss`, `ssim`, `dice`,
`hd95` (mm), `sdlogj` and `folding` (% of voxels with det J <= 0), and the same three overlap metrics without
registration (`*_identity`: the moving volume as it is). Real pairs of the test split (the inter-subject
Colin27 <-> MNI152 pairs) are logged apart, with the suffix `_real`. Under DDP the pairs are gathered from the
ranks first, each once (`common.data.distributed.SplitRows`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from monai.losses import LocalNormalizedCrossCorrelationLoss

from apps.nestedmorph.model import RegistrationNet
from common.data.distributed import SplitRows
from common.errors import check_range
from common.medical.jacobian import jacobian_determinant
from common.medical.reg_metrics import overlap, pair_metrics, ssim
from common.medical.reg_plots import plot_registration
from common.medical.warp import warp_labels
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
        self._rows = {"val": SplitRows(), "test": SplitRows()}

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict]:
        warped, ddf = self.model(batch["moving"], batch["fixed"])
        # fp32 even under bf16 autocast: LNCC's window sums (convolutions) lose E[xy] - E[x]E[y] to cancellation
        with torch.autocast(warped.device.type, enabled=False):
            parts = {"ncc": self.ncc(warped.float(), batch["fixed"].float()), "grad": grad3d(ddf.float())}
        return parts["ncc"] + self.smoothness * parts["grad"], {"warped": warped, "ddf": ddf, **parts}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, out = self.loss(batch)
        bs = batch["moving"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        for key in ("ncc", "grad"):
            self.log(f"train/{key}", out[key], on_step=False, on_epoch=True, batch_size=bs)
        return loss

    # ---- evaluation, one pair per batch ---------------------------------------------------------------
    def pair_scores(self, batch: dict) -> dict[str, float]:
        """Loss and metrics of one pair (batch of 1), registered and as it is (`*_identity`)."""
        loss, out = self.loss(batch)
        spacing = float(batch["spacing"][0])
        warped_labels = warp_labels(batch["moving_labels"], out["ddf"].float())
        scores = pair_metrics(out["warped"], batch["fixed"], warped_labels, batch["fixed_labels"], out["ddf"], spacing)
        identity = {"ssim": ssim(batch["moving"], batch["fixed"])} | overlap(
            batch["moving_labels"], batch["fixed_labels"], spacing
        )
        return {"loss": float(loss)} | scores | {f"{k}_identity": v for k, v in identity.items()}

    def _eval_step(self, batch: dict, batch_idx: int, split: str) -> None:
        scores = {k: torch.tensor([v], dtype=torch.float64) for k, v in self.pair_scores(batch).items()}
        self._rows[split].add(self.trainer, batch_idx, real=batch["real"].long(), **scores)

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def _log_means(self, split: str) -> None:
        """Means over the split's pairs, each pair once under DDP (gathered from every rank, padding repeats
        dropped), NaNs (pairs without labels) skipped; test's real pairs apart, with the suffix `_real`."""
        rows = self._rows[split].gather()
        real = rows.pop("real").bool() & (split == "test")
        for suffix, group in (("", ~real), ("_real", real)):
            if group.any():
                means = {f"{split}/{k}{suffix}": float(v[group].nanmean()) for k, v in rows.items()}
                self.log_dict(means)  # equal on every rank: each computed them from the same gathered rows

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

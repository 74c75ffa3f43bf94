"""BiViTModule: the shared image-classification module plus BiViT's staged training.

- `model.init_from`: at the start of a fresh fit (not a resume, whose checkpoint restores everything),
  the model is initialised from that checkpoint (`apps.bivit.init.load_init`): cross-layer binarisation
  starts each stage from the previous one.
- Knowledge distillation (`distill_alpha > 0`) from the full-precision teacher, as binary transformers are
  usually trained (BiBERT, BiT; the indexed BiViT code holds only its binarisation modules): the teacher
  is the init checkpoint's model, or the teacher that checkpoint itself carried (so stage 2 distils from
  the same full-precision model as stage 1). Loss = (1 - alpha) CE + alpha tau^2 KL(p_t^tau || p_s^tau).
  The teacher is frozen, in eval mode, kept outside the module's state_dict and optimiser, and saved
  under its own checkpoint key, so a resumed run gets it back without the init file.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from apps.bivit.init import TEACHER_KEY, load_init, read_checkpoint, teacher_source
from common.errors import ConfigError, check_range
from common.pipeline.build import build_model
from common.vision.module import ImageClassificationModule


def init_path(model: torch.nn.Module) -> str | None:
    """The model's `init_from` (the BiViT inside the shared ImageClassifier wrapper, or the model itself)."""
    return getattr(getattr(model, "net", model), "init_from", None)


class BiViTModule(ImageClassificationModule):
    """ImageClassificationModule + init from a checkpoint + distillation from a full-precision teacher.

    Args (beyond ImageClassificationModule's):
        distill_alpha: weight of the distillation term in [0, 1]; 0 trains on labels only. Needs `model.init_from`.
        distill_tau: softmax temperature of the distillation term (> 0).
    """

    def __init__(
        self, model, optimizer, scheduler=None, distill_alpha: float = 0.0, distill_tau: float = 1.0, **kwargs
    ):
        super().__init__(model, optimizer, scheduler, **kwargs)
        check_range("distill_alpha", distill_alpha, 0.0, 1.0)
        check_range("distill_tau", distill_tau, 0.0, low_inclusive=False)
        if distill_alpha > 0 and init_path(model) is None:
            raise ConfigError("distill_alpha", distill_alpha, "0 unless model.init_from names the teacher's checkpoint")
        self.distill_alpha, self.distill_tau = float(distill_alpha), float(distill_tau)
        self._teacher: list = []  # [(config, nn.Module)]: a list keeps it out of state_dict, .to() and the optimiser
        self.init_report: dict | None = None

    # ---- the teacher --------------------------------------------------------------------------------
    @property
    def teacher(self) -> torch.nn.Module | None:
        return self._teacher[0][1] if self._teacher else None

    def set_teacher(self, config: dict, state: dict) -> None:
        """Build the frozen teacher from its model config (apps./common. targets only) and weights."""
        teacher = build_model(OmegaConf.create(config), source=f"{TEACHER_KEY} config")
        teacher.load_state_dict(state)
        teacher.eval().requires_grad_(False)
        self._teacher = [(config, teacher.to(self.device))]

    def setup(self, stage: str) -> None:
        """Fresh fit: load `init_from` into the model and, with distillation, build the teacher from it."""
        if stage != "fit" or self.trainer.ckpt_path is not None:
            return  # a resume: the checkpoint restores the model and (on_load_checkpoint) the teacher
        path = init_path(self.model)
        if path is None:
            return
        self.init_report = load_init(self.model, path)
        if self.distill_alpha > 0:
            self.set_teacher(*teacher_source(read_checkpoint(path), path))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._teacher:
            config, teacher = self._teacher[0]
            checkpoint[TEACHER_KEY] = {"config": config, "state_dict": teacher.state_dict()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if TEACHER_KEY in checkpoint and self.distill_alpha > 0 and self.trainer.state.fn == "fit":
            self.set_teacher(*teacher_source(checkpoint, "checkpoint"))

    # ---- training -----------------------------------------------------------------------------------
    def distillation(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """tau^2 KL(softmax(teacher / tau) || softmax(student / tau)), mean over the batch. Logits [B, K]."""
        tau = self.distill_tau
        kl = F.kl_div(
            F.log_softmax(student / tau, -1), F.log_softmax(teacher / tau, -1), log_target=True, reduction="batchmean"
        )
        return kl * tau * tau

    def training_step(self, batch, batch_idx):
        if self.teacher is None or self.distill_alpha == 0:
            return super().training_step(batch, batch_idx)
        images, targets = self.mix_batch(*batch)
        logits = self.model(images)
        hard = self.classification_loss(logits, targets)
        with torch.no_grad():
            teacher_logits = self.teacher.to(images.device)(images)
        soft_loss = self.distillation(logits, teacher_logits)
        loss = (1 - self.distill_alpha) * hard + self.distill_alpha * soft_loss
        kw = {"on_step": False, "on_epoch": True, "batch_size": len(images)}
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(images))
        self.log("train/ce", hard, **kw)
        self.log("train/distill", soft_loss, **kw)
        return loss

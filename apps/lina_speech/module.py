"""LinaSpeechModule: next-token cross-entropy on codec tokens, with the unigram baseline beside every metric.

Logged per split: `loss` (the official CE, targets = BOS ignored), `acc` (top-1 token accuracy over the same
targets), `top10` (the official metric: the target among the 10 best), and the unigram baseline's `unigram_loss`
and `unigram_acc` on the same targets: per quantizer, the training targets' token frequencies (add-0.5
smoothing), i.e. the best a model that ignores the text and the past can do. Learning means beating it.
"""

from __future__ import annotations

import lightning as L
import torch

from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.tokens import BOS
from common.utils.schedulers import with_scheduler


class LinaSpeechModule(L.LightningModule):
    def __init__(self, model: LinaSpeech, optimizer, scheduler=None):
        super().__init__()
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.register_buffer(
            "unigram_logp", torch.full((model.n_q, model.vocab), -float(torch.log(torch.tensor(model.vocab))))
        )

    def on_fit_start(self) -> None:
        counts = self.trainer.datamodule.unigram_counts().to(self.device) + 0.5
        counts[:, : BOS + 1] = 0.0  # pad and BOS are never targets
        self.unigram_logp.copy_((counts / counts.sum(-1, keepdim=True)).log())

    def _step(self, batch: dict, split: str) -> torch.Tensor:
        logits = self.model.logits(batch["text"], batch["audio_in"])
        target = batch["target"]
        loss = self.model.loss(logits, target)
        bs = target.shape[0]
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=split != "test", batch_size=bs)
        if split == "train":
            return loss
        keep = target != BOS
        t = target[keep]
        kept = logits[keep]  # [N, vocab]
        unigram = self.unigram_logp[None, None].expand(*target.shape, -1)[keep]
        metrics = {
            "acc": (kept.argmax(-1) == t).float().mean(),
            "top10": (kept.topk(10, dim=-1).indices == t[:, None]).any(-1).float().mean(),
            "unigram_loss": -unigram.gather(-1, t[:, None]).mean(),
            "unigram_acc": (unigram.argmax(-1) == t).float().mean(),
        }
        for name, value in metrics.items():
            self.log(f"{split}/{name}", value, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

"""LinaSpeechModule: next-token cross-entropy on codec tokens, with the unigram baseline beside every metric.

Logged per split: `loss` (the official CE, targets = BOS ignored), `acc` (top-1 token accuracy over the same
targets), `top10` (the official metric: the target among the 10 best), and the unigram baseline's `unigram_loss`
and `unigram_acc` on the same targets: per quantizer, the training targets' token frequencies (add-0.5
smoothing), i.e. the best a model that ignores the text and the past can do. Learning means beating it.
`guide` > 0 adds that weight times the guided-attention loss of the cross-attention's two attentions (content
and position, averaged; `layers.guided_attention_loss`, logged as `train/guide`): not in the official recipe,
which learns the alignment from ~100B tokens; in minutes of training the model otherwise ignores the text
(README, "Why the GPU model babbles").
Val and test metrics are token-weighted means over the whole split, each utterance counted once under DDP
(`common.data.distributed.SplitRows`: the sampler's padding repeats are dropped).
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F

from apps.lina_speech.layers import guided_attention_loss
from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.tokens import BOS, NUM_SPECIALS
from common.data.distributed import SplitRows
from common.errors import check_range
from common.utils.schedulers import with_scheduler


class LinaSpeechModule(L.LightningModule):
    def __init__(self, model: LinaSpeech, optimizer, scheduler=None, guide: float = 0.0, guide_sigma: float = 0.2):
        super().__init__()
        check_range("guide", guide, 0.0)
        check_range("guide_sigma", guide_sigma, 0.0, low_inclusive=False)
        self.model, self.guide, self.guide_sigma = model, guide, guide_sigma
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self._outputs = {"val": SplitRows(), "test": SplitRows()}
        self.register_buffer(
            "unigram_logp", torch.full((model.n_q, model.vocab), -float(torch.log(torch.tensor(model.vocab))))
        )

    def on_fit_start(self) -> None:
        self.set_unigram(self.trainer.datamodule.unigram_counts())
        if self.model.codec is not None:
            self.model.load_codec_weights()

    def set_unigram(self, counts: torch.Tensor) -> None:
        """The unigram baseline from the training targets' counts [n_q, vocab] (add-0.5 smoothing)."""
        counts = counts.to(self.device) + 0.5
        counts[:, : BOS + 1] = 0.0  # pad and BOS are never targets
        self.unigram_logp.copy_((counts / counts.sum(-1, keepdim=True)).log())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        text, target, n = batch["text"], batch["target"], len(batch["target"])
        if self.guide:
            logits, att = self.model.logits(text, batch["audio_in"], weights=True)
        else:
            logits, att = self.model.logits(text, batch["audio_in"]), None
        loss = self.model.loss(logits, target)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=n)
        if att is None:
            return loss
        frames = (target[..., 0] >= NUM_SPECIALS).sum(1)  # quantizer 0's codes: the utterance's frames
        text_len = (text != 0).sum(1)  # both attentions guided: the position one is what reads the text's values
        guide = sum(guided_attention_loss(att[:, i], text_len, frames, self.guide_sigma) for i in range(2)) / 2
        self.log("train/guide", guide, on_step=False, on_epoch=True, batch_size=n)
        return loss + self.guide * guide

    def _eval_step(self, split: str, batch: dict, batch_idx: int) -> None:
        """Per utterance: sums over its kept targets (loss, hits, unigram loss and hits) and their count; the
        split's metrics are ratios of the gathered sums (token-weighted, each utterance once under DDP)."""
        logits = self.model.logits(batch["text"], batch["audio_in"]).float()
        target = batch["target"]
        keep = target != BOS
        nll = F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=BOS, reduction="none")
        unigram = self.unigram_logp[None, None].expand(*target.shape, -1)
        rows = {
            "loss": nll.view_as(target),
            "acc": logits.argmax(-1) == target,
            "top10": (logits.topk(10, dim=-1).indices == target[..., None]).any(-1),
            "unigram_loss": -unigram.gather(-1, target[..., None])[..., 0],
            "unigram_acc": unigram.argmax(-1) == target,
        }
        sums = {k: torch.where(keep, v.double(), 0.0).sum((1, 2)) for k, v in rows.items()}  # log 0 of BOS: dropped
        self._outputs[split].add(self.trainer, batch_idx, tokens=keep.double().sum((1, 2)), **sums)

    def _eval_epoch_end(self, split: str) -> None:
        if not self._outputs[split]:
            return
        sums = {k: v.sum() for k, v in self._outputs[split].gather().items()}
        tokens = sums.pop("tokens").clamp_min(1)
        self.log_dict({f"{split}/{k}": float(v / tokens) for k, v in sums.items()})  # equal on every rank

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step("test", batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        trained = [p for p in self.model.parameters() if p.requires_grad]  # not the frozen codec
        return with_scheduler(self.optimizer_factory(trained), self.scheduler_factory, self.trainer)

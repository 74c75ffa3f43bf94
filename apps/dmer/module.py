"""Lightning module: DSAML's score + diagonal attention loss, plain (DMER) or meta-learned per annotator (PDMER).

Metrics (val and test, per piece then averaged, as the official code): `{arousal,valence}_{ccc,pcc,rmse}` and
`score` (the mean of CCC, PCC and 1 - RMSE over both dimensions; 1 - score is the score loss). The test also
scores the per-step mean of the training curves (`mean_*`, the trivial baseline) and personalisation: for each
held-out annotator, the model adapted to one of their pieces (`adapt_steps` gradient steps at `inner_lr`) is
scored against the general model on their other pieces: `personal_{rmse,ccc}_{general,adapted}` (means over
annotators of both dimensions' mean), `personal_{rmse,ccc}_gain` and its spread `personal_*_gain_std`. With
`personal_split=val` the same is scored for the training annotators on the val pieces instead, where the
adaptation's settings are chosen (`make eval app=dmer ARGS="module.personal_split=val ..."`).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from apps.dmer.maml import Params, adapt, adaptable, call, meta_loss
from apps.dmer.scores import DIMENSIONS, ccc, diagonal_attention_loss, piece_scores, score_loss
from common.data.distributed import SplitRows, all_gather_rows
from common.errors import ConfigError, check_choice, check_range
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler


def average_score(scores: dict[str, float]) -> float:
    return float(np.mean([1 - v if k.endswith("rmse") else v for k, v in scores.items()]))


class DMERModule(L.LightningModule):
    """Args:
    model: apps.dmer.model.DSAML. optimizer, scheduler: `_partial_` factories.
    diag_weight: weight of the diagonal attention loss (official: 1).
    maml: meta-learn over per-annotator tasks (PDMER) instead of plain training on the consensus (DMER).
    inner_lr, adapt_steps, first_order: the inner loop, used by meta-training and by the personalisation test.
    adapt_prefix: the inner loop changes only the parameters whose names start with it ("": all; "head.": the
        BiLSTM head, the config's default: adapting the whole model to one piece fits that piece's errors, README).
    personal_supports: support pieces tried per annotator in the personalisation test.
    personal_split: whose personalisation the test scores: test (the held-out annotators on the test pieces) or
        val (the training annotators on the val pieces: for choosing the adaptation's settings).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer,
        scheduler=None,
        diag_weight: float = 1.0,
        maml: bool = False,
        inner_lr: float = 0.01,
        adapt_steps: int = 16,
        first_order: bool = False,
        adapt_prefix: str = "",
        personal_supports: int = 3,
        personal_split: str = "test",
    ):
        super().__init__()
        check_range("diag_weight", diag_weight, 0.0)
        check_range("inner_lr", inner_lr, 0.0, low_inclusive=False)
        check_range("adapt_steps", adapt_steps, 0)
        check_choice("personal_split", personal_split, ("test", "val"))
        if not adaptable(model, adapt_prefix):
            raise ConfigError("adapt_prefix", adapt_prefix, "the start of some parameter names, e.g. head. ('': all)")
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.diag_weight, self.maml = diag_weight, maml
        self.inner_lr, self.adapt_steps, self.first_order = inner_lr, adapt_steps, first_order
        self.adapt_prefix, self.personal_supports, self.personal_split = adapt_prefix, personal_supports, personal_split
        self._outputs = {"val": SplitRows(), "test": SplitRows()}

    # ---- losses ---------------------------------------------------------------------------------------------
    def loss(self, model: nn.Module, params: Params | None, batch: tuple) -> torch.Tensor:
        """Score loss (+ diagonal attention loss) of `model` run with `params` (None: its own) on a batch."""
        windows, clip, target = batch
        if params is None:
            pred, local_w, global_w = model(windows, clip, return_attention=True)
        else:
            pred, local_w, global_w = call(model, params, windows, clip, return_attention=True)
        loss = score_loss(pred, target)
        if local_w is not None and self.diag_weight > 0:
            loss = loss + self.diag_weight * diagonal_attention_loss(local_w, global_w)
        return loss

    def _functional_loss(self, model, params, batch):
        return self.loss(model, params, batch)

    def training_step(self, batch, batch_idx):
        if self.maml:
            loss = meta_loss(
                self.model,
                batch,
                self._functional_loss,
                self.adapt_steps,
                self.inner_lr,
                self.first_order,
                self.adapt_prefix,
            )
            size = len(batch)
        else:
            loss, size = self.loss(self.model, None, batch), len(batch[0])
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=size)
        return loss

    # ---- evaluation -----------------------------------------------------------------------------------------
    def _eval_step(self, split: str, batch, batch_idx: int) -> None:
        windows, clip, target = batch
        self._outputs[split].add(self.trainer, batch_idx, pred=self.model(windows, clip).float(), target=target)

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch, batch_idx)

    def _eval_epoch_end(self, split: str) -> dict[str, float]:
        """Scores of the whole split, each piece once (under DDP: gathered from the ranks, padding repeats
        dropped), equal on every rank."""
        if not self._outputs[split]:
            return {}
        rows = self._outputs[split].gather()
        pred, target = rows["pred"], rows["target"].float()
        scores = {k: float(v.mean()) for k, v in piece_scores(pred, target).items()}
        scores["score"] = average_score(scores)
        for d, name in enumerate(DIMENSIONS):  # CCC over all steps of all pieces, as many DMER papers report
            scores[f"{name}_ccc_pooled"] = float(ccc(pred[..., d].flatten(), target[..., d].flatten()))
        if split == "test":
            scores |= self._baseline_scores(target)
        return scores

    def _baseline_scores(self, target: torch.Tensor) -> dict[str, float]:
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None:
            return {}
        mean = torch.as_tensor(datamodule.step_mean(), dtype=target.dtype).expand_as(target)
        scores = {k: float(v.mean()) for k, v in piece_scores(mean, target).items()}
        scores["score"] = average_score(scores)
        return {f"mean_{k}": v for k, v in scores.items()}

    def on_validation_epoch_end(self) -> None:
        self.log_dict({f"val/{k}": v for k, v in self._eval_epoch_end("val").items()})

    def on_test_epoch_end(self) -> None:
        scores = self._eval_epoch_end("test")
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and hasattr(datamodule, "annotator_tasks"):
            scores |= self.personalisation(datamodule)
        self.log_dict({f"test/{k}": v for k, v in scores.items()})

    # ---- personalisation ------------------------------------------------------------------------------------
    def adapted_params(self, support: tuple) -> Params:
        """The parameters adapted to one annotator's support batch, in eval mode: BatchNorm keeps the training
        set's statistics (one piece's batch statistics rescale its key features: adapting then hurt, README)."""
        # Lightning tests under inference mode, whose tensors take no gradient: step out of it for the inner loop.
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(self.model):
            params = {k: p.detach().clone() for k, p in adaptable(self.model, self.adapt_prefix).items()}
            support = tuple(t.clone() for t in support)
            adapted = adapt(self.model, params, self._functional_loss, support, self.adapt_steps, self.inner_lr, True)
        return {k: p.detach() for k, p in adapted.items()}

    @torch.no_grad()
    def personalisation(self, datamodule) -> dict[str, float]:
        """General vs adapted RMSE and CCC on each annotator's other pieces (of `personal_split`), averaged over
        supports.
        Under DDP each rank adapts to its share of the annotators and the rows are gathered: every annotator
        once, with the numbers of one process (each annotator's dropout draws are seeded by its index)."""
        tasks = [
            rated for _, rated in sorted(datamodule.annotator_tasks(self.personal_split).items()) if len(rated) >= 2
        ]
        if not tasks or self.adapt_steps == 0:
            return {}
        mine = list(range(self.global_rank, len(tasks), self.trainer.world_size))
        rows = torch.tensor([self._personal_row(datamodule, tasks[k], seed=k) for k in mine], dtype=torch.float64)
        gathered = all_gather_rows({"index": torch.tensor(mine, dtype=torch.long), "row": rows.reshape(-1, 4)})
        rows = gathered["row"][gathered["index"].argsort()].numpy()  # [annotators, 4]
        rmse_gain, ccc_gain = rows[:, 0] - rows[:, 1], rows[:, 3] - rows[:, 2]
        return {
            "personal_rmse_general": rows[:, 0].mean(),
            "personal_rmse_adapted": rows[:, 1].mean(),
            "personal_ccc_general": rows[:, 2].mean(),
            "personal_ccc_adapted": rows[:, 3].mean(),
            "personal_rmse_gain": rmse_gain.mean(),
            "personal_rmse_gain_std": rmse_gain.std(),
            "personal_ccc_gain": ccc_gain.mean(),
            "personal_ccc_gain_std": ccc_gain.std(),
            "personal_annotators_improved": float(((rmse_gain > 0) & (ccc_gain > 0)).mean()),
        }

    def _personal_row(self, datamodule, rated: list, seed: int) -> list[float]:
        """[general RMSE, adapted RMSE, general CCC, adapted CCC] of one annotator, averaged over supports."""
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        per_support = []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for s in range(min(self.personal_supports, len(rated))):
                support = tuple(t.to(self.device) for t in datamodule.pieces.batch([rated[s]]))
                query = tuple(t.to(self.device) for t in datamodule.pieces.batch(rated[:s] + rated[s + 1 :]))
                with eval_mode(self.model):
                    general = piece_scores(self.model(*query[:2]), query[2])
                    adapted = piece_scores(call(self.model, self.adapted_params(support), *query[:2]), query[2])
                per_support.append([_mean_of(scores, m) for m in ("rmse", "ccc") for scores in (general, adapted)])
        return np.mean(per_support, axis=0).tolist()

    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """Predicted against consensus curves of a few test pieces."""
        from apps.dmer.plots import plot_test_curves

        return [plot_test_curves(self.model, datamodule, Path(plot_dir) / "emotion_curves.png", self.device)]


def _mean_of(scores: dict[str, torch.Tensor], metric: str) -> float:
    return float(np.mean([scores[f"{d}_{metric}"].mean().item() for d in DIMENSIONS]))

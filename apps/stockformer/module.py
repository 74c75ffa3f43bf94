"""StockformerModule: the paper's multi-task loss, selection metrics, backtests against two baselines, plots.

Loss (the paper, equal weights): MAE(y, y_hat) + MAE(y_low, y_hat_low) + CE(trend, cls) + CE(trend, cls_low),
where y are the next T2 daily returns, y_low their wavelet low-frequency part, trend = (y > 0), and the
`_low` outputs come from the low-frequency stream. Returns enter the MAE in units of the train return
std (the model's `return_scale` buffer) so that the regression and classification terms have comparable
size; the paper's returns were not rescaled.

Validation and test gather the split's predictions in date order and log: `loss`, `mae`/`rmse` of daily
returns, direction `acc`, `ic`/`rank_ic`, and the top-k backtest (`ann_return`, `sharpe`, `max_drawdown`,
`turnover`) with the baselines in the same run on the same days: `*_equal_weight` (buy-and-hold) and
`*_momentum` (top-k by 12-1 momentum). Under DDP the split's windows are gathered from every rank (each once,
DistributedSampler's padding repeats dropped), so the metrics and backtests are those of one process.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from apps.stockformer.model import Stockformer
from apps.stockformer.plots import plot_equity_curves, plot_predicted_vs_realised
from apps.stockformer.portfolio import selection_metrics, strategy_backtests
from common.data.distributed import SplitRows
from common.errors import check_range
from common.timeseries.metrics import mae, rmse
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler


class StockformerModule(L.LightningModule):
    def __init__(
        self,
        model: Stockformer,
        optimizer,
        scheduler=None,
        top_k: int = 5,
        n_drop: int | None = None,
        cost_bps: float = 10.0,
    ):
        super().__init__()
        check_range("top_k", top_k, 1, model.num_stocks)
        if n_drop is not None:
            check_range("n_drop", n_drop, 1, top_k)
        check_range("cost_bps", cost_bps, 0.0)
        self.save_hyperparameters(ignore=["model", "optimizer", "scheduler"])
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.top_k, self.cost_bps = int(top_k), float(cost_bps)
        self.n_drop = None if n_drop is None else int(n_drop)
        self._outputs = {"val": SplitRows(), "test": SplitRows()}

    # ---- statistics from the train split --------------------------------------------------------------
    def on_fit_start(self) -> None:
        dm = self.trainer.datamodule
        with torch.no_grad():  # a deterministic function of the data config: copying again on resume is a no-op
            for name, value in dm.train_statistics().items():
                getattr(self.model, name).copy_(value.to(self.device))

    # ---- loss ----------------------------------------------------------------------------------------
    def _forward(self, batch: dict) -> tuple[dict, dict]:
        """The outputs and each loss term per window [B] (every window has as many terms: the batch mean of these
        is the mean over all terms)."""
        out = self.model.forward_all(batch["returns"], batch["factors"], batch["day_of_week"])
        y = batch["target"] / self.model.return_scale
        trend = (batch["target"] > 0).long()

        def per_window(terms: torch.Tensor) -> torch.Tensor:
            return terms.flatten(1).mean(1)

        parts = {
            "mae": per_window(F.l1_loss(out["reg"], y, reduction="none")),
            "mae_low": per_window(F.l1_loss(out["reg_low"], self.model.low_target(y), reduction="none")),
            "ce": per_window(F.cross_entropy(out["logits"].movedim(-1, 1), trend, reduction="none")),
            "ce_low": per_window(F.cross_entropy(out["logits_low"].movedim(-1, 1), trend, reduction="none")),
        }
        return out, parts

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        _, parts = self._forward(batch)
        parts = {k: v.mean() for k, v in parts.items()}
        loss = sum(parts.values())
        bs = batch["target"].shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=bs)
        for k, v in parts.items():
            self.log(f"train/{k}", v, on_step=False, on_epoch=True, batch_size=bs)
        return loss

    # ---- evaluation ----------------------------------------------------------------------------------
    def _eval_step(self, batch: dict, batch_idx: int, split: str) -> None:
        out, parts = self._forward(batch)
        self._outputs[split].add(
            self.trainer,
            batch_idx,
            loss=sum(parts.values()),
            pred=out["reg"] * self.model.return_scale,
            up=out["logits"].argmax(-1),
            target=batch["target"],
            momentum=batch["momentum"],
            index=batch["index"],
        )

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val")

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test")

    def gathered(self, split: str) -> dict[str, np.ndarray]:
        """The split's windows from every rank, each once, in date order (a collective under DDP)."""
        rows = {k: v.numpy().astype(np.float64) for k, v in self._outputs[split].gather().items()}
        order = np.argsort(rows["index"], kind="stable")  # date order, whatever the loader did
        return {k: v[order] for k, v in rows.items()}

    def _log_split(self, split: str) -> None:
        if not self._outputs[split]:
            return
        g = self.gathered(split)
        metrics = {
            "loss": float(g["loss"].mean()),
            "mae": mae(g["target"], g["pred"]),
            "rmse": rmse(g["target"], g["pred"]),
            "acc": float((g["up"] == (g["target"] > 0)).mean()),
            **selection_metrics(g["pred"], g["target"], g["momentum"], self.top_k, self.cost_bps, self.n_drop),
        }
        for k, v in metrics.items():  # equal on every rank
            self.log(f"{split}/{k}", float(np.nan_to_num(v)), on_step=False, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # ---- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self):
        opt = self.optimizer_factory(self.model.parameters())
        return with_scheduler(opt, self.scheduler_factory, self.trainer, monitor="val/mae")  # the paper: on val MAE

    # ---- pictures ------------------------------------------------------------------------------------
    @torch.no_grad()
    def split_predictions(self, datamodule, split: str = "test") -> dict[str, np.ndarray]:
        parts = []
        with eval_mode(self.model):
            for batch in getattr(datamodule, f"{split}_dataloader")():
                inputs = (batch[k].to(self.device) for k in ("returns", "factors", "day_of_week"))
                pred, _ = self.model(*inputs)
                parts.append({"pred": pred.cpu(), **{k: batch[k] for k in ("target", "momentum", "index")}})
        return {k: torch.cat([p[k] for p in parts]).numpy().astype(np.float64) for k in parts[0]}

    def make_plots(self, plot_dir: Path, datamodule) -> None:
        """Test-period equity curves (model vs equal weight vs momentum) and predicted vs realised returns,
        with the weights at the end of training (the pipeline's test uses the best checkpoint)."""
        g = self.split_predictions(datamodule, "test")
        results = strategy_backtests(g["pred"], g["target"], g["momentum"], self.top_k, self.cost_bps, self.n_drop)
        horizon = g["target"].shape[1]
        rows = g["index"].astype(np.int64)[::horizon]
        day_rows = (rows[:, None] + 1 + np.arange(horizon)[None, :]).reshape(-1)
        dates = datamodule.dates(day_rows)
        plot_equity_curves(results, dates, self.top_k, self.cost_bps, Path(plot_dir) / "equity_curves.png")
        plot_predicted_vs_realised(g["pred"], g["target"], Path(plot_dir) / "predicted_vs_realised.png")

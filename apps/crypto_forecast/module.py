"""Lightning module: trains the forecaster on the scaled target, scores it in USD against the naive forecast."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from torch import nn

from common.data.distributed import SplitRows
from common.errors import check_choice
from common.timeseries.metrics import regression_metrics
from common.utils.modes import eval_mode
from common.utils.schedulers import with_scheduler

LOSSES = {"mse": nn.MSELoss, "huber": nn.HuberLoss, "mae": nn.L1Loss}


class CryptoForecastModule(L.LightningModule):
    """Next-close regression.

    The loss (`mse`, the paper's; or `huber`, `mae`) is taken in the scaled target space
    (`model.forward_scaled` vs `model.scale_target`); metrics are computed on prices in USD after the inverse
    transform (`model(window)`): `{val,test}/{mae,rmse,mape,r2,dir_acc}`, and on the same windows the naive
    last-value forecast as `{val,test}/naive_{mae,rmse,mape,r2,dir_acc}`. Validation and test gather the split's
    windows from every DDP rank (each once) and score them all, so the numbers are those of one process.
    """

    def __init__(self, model: nn.Module, optimizer, scheduler=None, loss: str = "mse"):
        super().__init__()
        check_choice("loss", loss, LOSSES)
        self.model = model
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.criterion = LOSSES[loss]()
        self.row_criterion = LOSSES[loss](reduction="none")  # per window: averaged over the gathered split
        self._outputs = {"val": SplitRows(), "test": SplitRows()}

    def training_step(self, batch, batch_idx):
        x, y, _ = batch
        loss = self.criterion(self.model.forward_scaled(x), self.model.scale_target(y, x))
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(y))
        return loss

    def _eval_step(self, split: str, batch, batch_idx: int) -> None:
        x, y, prev = batch
        loss = self.row_criterion(self.model.forward_scaled(x), self.model.scale_target(y, x))
        self._outputs[split].add(self.trainer, batch_idx, loss=loss, pred=self.model(x).float(), true=y, prev=prev)

    def validation_step(self, batch, batch_idx):
        self._eval_step("val", batch, batch_idx)

    def test_step(self, batch, batch_idx):
        self._eval_step("test", batch, batch_idx)

    def _eval_epoch_end(self, split: str) -> None:
        if not self._outputs[split]:
            return
        rows = {k: v.double().numpy() for k, v in self._outputs[split].gather().items()}
        pred, true, prev = rows["pred"], rows["true"], rows["prev"]
        scores = {"loss": float(rows["loss"].mean()), **regression_metrics(true, pred, prev)}
        # the naive forecast never moves, so it has no direction to score: its dir_acc is left out
        naive = regression_metrics(true, prev, prev)
        scores |= {f"naive_{k}": v for k, v in naive.items() if k != "dir_acc"}
        self.log_dict({f"{split}/{k}": v for k, v in scores.items()}, prog_bar=False)  # equal on every rank

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        return with_scheduler(self.optimizer_factory(self.model.parameters()), self.scheduler_factory, self.trainer)

    @torch.no_grad()
    def make_plots(self, plot_dir: Path, datamodule) -> list[Path]:
        """The model's one-step forecasts against the truth and the naive forecast on the test period."""
        from common.timeseries.plots import plot_forecast

        w = datamodule.windows["test"]
        x = torch.from_numpy(w.x).to(self.device)
        with eval_mode(self.model):
            pred = torch.cat([self.model(chunk) for chunk in x.split(1024)]).cpu().numpy()
        title = f"{datamodule.dataset_name}: test-period one-step forecasts ({self.model.arch}, last epoch's weights)"
        out = plot_forecast(
            datamodule.target_times("test"),
            w.y,
            {self.model.arch: pred, "naive (last close)": w.prev},
            Path(plot_dir) / "forecast.png",
            title=title,
            ylabel="close (USD)",
            zoom=100,
        )
        return [out]

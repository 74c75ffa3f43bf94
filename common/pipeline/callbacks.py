"""Pipeline callbacks: the run config inside every checkpoint, and the plots folder."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

CONFIG_KEY = "manyheads"


class StoreRunConfig(L.Callback):
    """Put the resolved run config into each checkpoint, so eval and export rebuild the model from it alone."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CONFIG_KEY] = {"config": self.config}


class Plots(L.Callback):
    """After training: learning curves from the CSV log, then the app's own pictures (`make_plots`)."""

    def __init__(self, plot_dir: str):
        self.plot_dir = Path(plot_dir)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        from common.pipeline.plots import plot_learning_curves

        self.plot_dir.mkdir(parents=True, exist_ok=True)
        csv_logs = [lg for lg in trainer.loggers if isinstance(lg, L.pytorch.loggers.CSVLogger)]
        if csv_logs:
            csv_logs[0].save()
            plot_learning_curves(Path(csv_logs[0].log_dir) / "metrics.csv", self.plot_dir / "learning_curves.png")
        if hasattr(pl_module, "make_plots"):
            pl_module.make_plots(self.plot_dir, trainer.datamodule)

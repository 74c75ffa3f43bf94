"""Pipeline callbacks: the run config and the random state inside every checkpoint, training throughput, the
plots folder, and the CSV log a resumed run keeps."""

from __future__ import annotations

import csv
import random
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

CONFIG_KEY = "manyheads"


class StoreRunConfig(L.Callback):
    """Put the resolved run config into each checkpoint, so eval and export rebuild the model from it alone."""

    def __init__(self, config: dict):
        self.config = config

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CONFIG_KEY] = {"config": self.config}


class RandomState(L.Callback):
    """Carry the global random states (torch, CUDA, numpy, Python) in each checkpoint and restore them when a run
    resumes, so dropout, augmentation and the shuffle of a `RandomSampler` continue as if never interrupted.

    They are restored at `on_fit_start`, the last callback hook before the resumed epoch creates its data iterator
    (which draws a seed from torch's generator); this assumes that what runs from there to the epoch's first batch
    (the module's `on_fit_start`, the `on_train_start` and `on_train_epoch_start` hooks) draws nothing from them.
    The states are those of rank 0. A sampler with a generator of its own must derive it from `seed + epoch`
    (`common.data.samplers.EpochShuffle`, scgc's node batches): it is not stored.
    """

    def __init__(self):
        self._pending: dict | None = None

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        version, internal, gauss_next = random.getstate()
        state = {
            "torch": torch.get_rng_state(),
            "numpy": {
                "kind": kind,
                "keys": torch.from_numpy(keys.astype(np.int64)),  # a tensor: checkpoints load weights_only
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "gauss": float(gauss),
            },
            "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next},
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self._pending = state_dict

    def on_fit_start(self, trainer, pl_module) -> None:
        state, self._pending = self._pending, None
        if state is None:  # a fresh run
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        p = state["python"]
        random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))
        if "cuda" in state and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])


def batch_size(batch) -> int:
    """The first dimension of the batch's first tensor (1 when it has none)."""
    first = batch
    while isinstance(first, (list, tuple, dict)) and len(first):
        first = next(iter(first.values())) if isinstance(first, dict) else first[0]
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.ndim else 1


class TrainThroughput(L.Callback):
    """Training samples per second over all ranks: the time from each training epoch's start to its last batch's
    end (so validation, checkpoints and plots are left out), summed over epochs; the batch size is the first
    dimension of the batch's first tensor. CUDA is synchronised at both ends so that queued kernels count."""

    def __init__(self):
        self.samples, self.seconds, self._start = 0, 0.0, None

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start = self._now(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += batch_size(batch)
        if batch_idx + 1 == trainer.num_training_batches and self._start is not None:
            self.seconds += self._now(pl_module) - self._start
            self._start = None

    def samples_per_second(self, world_size: int = 1) -> float | None:
        return round(self.samples * world_size / self.seconds, 1) if self.seconds > 0 else None


class Plots(L.Callback):
    """After training: learning curves from the CSV log, then the app's own pictures (`make_plots`)."""

    def __init__(self, plot_dir: str):
        self.plot_dir = Path(plot_dir)

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        from common.pipeline.plots import plot_learning_curves

        self.plot_dir.mkdir(parents=True, exist_ok=True)
        csv_logs = [lg for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        if csv_logs:
            csv_logs[0].save()
            plot_learning_curves(Path(csv_logs[0].log_dir) / "metrics.csv", self.plot_dir / "learning_curves.png")
        if hasattr(pl_module, "make_plots"):
            pl_module.make_plots(self.plot_dir, trainer.datamodule)


def keep_csv_log(loggers: list, checkpoint: dict) -> None:
    """On resume from `checkpoint`: give each CSVLogger back the rows its run logged before that checkpoint.

    Lightning's CSV writer deletes an existing `metrics.csv` when it starts, so a resumed run's log (and its learning
    curves) would begin at the resumed epoch. The writer is created here, before Lightning does, and the earlier
    rows are written back first. Rows logged after the checkpoint (a killed run went on past it) are dropped: the
    resumed run logs those steps again. Call on rank 0 only."""
    stepped = checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"]
    for logger in loggers:
        path = Path(logger.log_dir) / "metrics.csv" if isinstance(logger, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with path.open(newline="") as f:  # `step`: the batches stepped before the row's batch
            kept = [row for row in csv.DictReader(f) if int(row["step"]) < stepped]
        rows = [{k: v for k, v in row.items() if v != ""} for row in kept]
        with warnings.catch_warnings():  # "previous log files ... will be deleted": they are written back below
            warnings.filterwarnings("ignore", message="Experiment logs directory")
            writer = logger.experiment
        writer.metrics = rows + writer.metrics
        writer.save()

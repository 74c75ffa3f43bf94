"""Lightning checkpoint I/O that writes atomically and reads with `weights_only=True`, and the `last.ckpt` writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.pipeline.safety import load_checkpoint
from common.utils.files import atomic_write, point_link


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file and rename it into place, so a kill mid-save never leaves a torn `last.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


class LastCheckpoint(Checkpoint):
    """Write `<dirpath>/last.ckpt` after every training epoch, and every `every_n_train_steps` steps if set, whatever
    the monitored metric does (Lightning's `save_last` follows the top-k saves, so a metric that stops improving
    froze `last.ckpt` at that epoch).

    The epoch's save comes in the checkpoint callbacks' turn of `on_train_epoch_end`, after validation and the
    module's own epoch-end hook: the checkpoint holds exactly what the next epoch starts from, so resuming from it
    is exact. A mid-epoch save (`every_n_train_steps`) resumes at its step, but the rest of that epoch is drawn
    from a fresh data iterator (Lightning warns), so it is not bit-exact.

    `latest`, if given, is a link pointed at the run folder once its first `last.ckpt` exists: a start that fails
    before any checkpoint leaves `latest` on the previous run.
    """

    def __init__(self, dirpath: str | Path, every_n_train_steps: int | None = None, latest: str | Path | None = None):
        self.path = Path(dirpath) / "last.ckpt"
        self.every_n_train_steps = every_n_train_steps
        self.latest = None if latest is None else Path(latest)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_of_epoch = batch_idx + 1 == trainer.num_training_batches  # the epoch's own save follows
        if self.every_n_train_steps and trainer.global_step % self.every_n_train_steps == 0 and not last_of_epoch:
            self._save(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(trainer)

    def _save(self, trainer) -> None:
        if trainer.fast_dev_run:
            return
        trainer.save_checkpoint(self.path)  # every rank calls it (some strategies gather); rank 0 writes
        if self.latest is not None and trainer.is_global_zero:
            point_link(self.latest, self.path.parent.parent)
            self.latest = None  # pointed once: a later run may take the link over while this one trains

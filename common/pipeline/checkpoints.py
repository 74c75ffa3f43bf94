"""Lightning checkpoint I/O that writes atomically and reads with `weights_only=True`."""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from common.pipeline.safety import load_checkpoint
from common.utils.files import atomic_write


class AtomicCheckpointIO(TorchCheckpointIO):
    """Save to a temporary file and rename it into place, so a kill mid-save never leaves a torn `last.ckpt`."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")

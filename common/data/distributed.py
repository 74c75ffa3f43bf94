"""Evaluation splits under DDP: where each row of a rank's eval batch sits in the split, and the split gathered.

Under DDP Lightning deals an eval loader to the ranks with a `DistributedSampler` (shuffle off) that pads the
split to a multiple of the world size W by repeating its first rows, so that every rank runs the same number
of steps (DDP's forward may sync buffers, so a rank with fewer steps would hang the others). Rank r's j-th row is
row j * W + r of the padded split; rows at n and beyond are the repeats. A metric over the raw union of the
ranks' rows counts those repeats twice; `split_positions` tells them apart and `SplitRows` drops them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


def _eval_loader(trainer):
    if trainer.testing:
        loaders = trainer.test_dataloaders
    elif trainer.predicting:
        loaders = trainer.predict_dataloaders
    else:  # validating, or the sanity check before fit
        loaders = trainer.val_dataloaders
    if isinstance(loaders, (list, tuple)):
        if len(loaders) != 1:
            raise ValueError("split_positions serves a single eval dataloader")
        loaders = loaders[0]
    return loaders


def split_positions(trainer, batch_idx: int, batch_len: int) -> tuple[torch.Tensor, int]:
    """(positions [batch_len] int64, n): where the rows of this rank's eval batch `batch_idx` sit in the split as
    one process reads it, and the split's length n. Positions >= n are DistributedSampler's padding repeats.

    The loader batches its sampler's order (`batch_size` rows per batch, only the last one short)."""
    loader = _eval_loader(trainer)
    if loader.batch_size is None:
        raise ValueError("split_positions needs a loader that batches its sampler's rows (batch_size set)")
    local = batch_idx * loader.batch_size + torch.arange(batch_len)
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        if sampler.shuffle:
            raise ValueError("an eval split dealt out shuffled has no row order to restore")
        return local * sampler.num_replicas + sampler.rank, len(sampler.dataset)
    return local, len(sampler)


def all_gather_rows(rows: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every rank's rows (CPU tensors, any count per rank), concatenated rank by rank on every rank."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts: list = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    return {k: torch.cat([p[k] for p in parts]) for k in rows}


class SplitRows:
    """Per-row outputs of an eval split, kept batch by batch on each rank; `gather()` returns them from every
    rank, in the split's one-process order, each row once (DDP's padding repeats dropped).

        self.rows = SplitRows()                                        # one per split
        self.rows.add(self.trainer, batch_idx, pred=pred, y=y)         # in validation_step / test_step
        g = self.rows.gather()                                         # at the epoch's end, on every rank
    """

    def __init__(self):
        self.parts: list[dict[str, torch.Tensor]] = []
        self.n = 0

    def add(self, trainer, batch_idx: int, **rows: torch.Tensor) -> None:
        batch_len = len(next(iter(rows.values())))
        positions, self.n = split_positions(trainer, batch_idx, batch_len)
        self.parts.append({"_position": positions, **{k: v.detach().cpu() for k, v in rows.items()}})

    def __len__(self) -> int:
        return len(self.parts)

    def gather(self) -> dict[str, torch.Tensor]:
        """Gathered rows in split order (a collective: every rank calls it); the store is emptied."""
        parts, self.parts = self.parts, []
        rows = all_gather_rows({k: torch.cat([p[k] for p in parts]) for k in parts[0]})
        position = rows.pop("_position")
        order = position.argsort()
        keep = order[position[order] < self.n]
        return {k: v[keep] for k, v in rows.items()}


def real_rows(trainer, batch_idx: int, batch_len: int) -> torch.Tensor:
    """Bool [batch_len]: the rows of this rank's eval batch that are the split's own (False: a padding repeat);
    for metrics whose states the ranks sync (torchmetrics), updated with these rows only."""
    positions, n = split_positions(trainer, batch_idx, batch_len)
    return positions < n

"""Training order with batches of similar lengths: a batch costs its longest utterance times its size, so random
batches of the embedded corpus pay 1.65x the real frames in padding; these pay ~1.05x (measured: 185,544 vs
290,772 padded steps an epoch for 176,625 real ones), and a training epoch takes ~1.5x less time.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class LengthBuckets(Sampler[int]):
    """Each epoch: a fresh permutation, sorted by length within windows of `window` units, cut into units of
    `batch_size * world_size` indices, the units in a random order (the last, short one last).

    Under DDP Lightning deals a custom sampler out strided (`DistributedSamplerWrapper`, no shuffle): rank r
    takes every world_size-th index, so each rank's batch is one unit's share, of similar lengths too. The
    order must be the same on every rank: it depends only on `seed` and the epoch. Lightning calls `set_epoch`
    every epoch (under DDP the pinned lightning 2.6.6's wrapper passes it on), so a resumed run draws the
    uninterrupted run's orders (the house rule, common/pipeline/callbacks.py); iterated outside Lightning, the
    sampler counts its own epochs.
    """

    def __init__(self, lengths: list[int], batch_size: int, world_size: int = 1, window: int = 16, seed: int = 0):
        self.lengths, self.unit, self.window, self.seed = list(lengths), batch_size * world_size, window, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        gen = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        order = torch.randperm(len(self.lengths), generator=gen).tolist()
        span = self.unit * self.window
        length = self.lengths.__getitem__
        order = [i for s in range(0, len(order), span) for i in sorted(order[s : s + span], key=length)]
        units = [order[s : s + self.unit] for s in range(0, len(order), self.unit)]
        full = [u for u in units if len(u) == self.unit]  # a short unit mid-epoch would shift the later batches
        for j in torch.randperm(len(full), generator=gen).tolist():
            yield from full[j]
        for unit in units[len(full) :]:
            yield from unit

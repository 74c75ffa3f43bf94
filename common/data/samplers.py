"""Samplers whose order is a function of the seed and the epoch, so a resumed run replays the same batches."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler):
    """A permutation of range(n) drawn from `seed + epoch`: a resumed run sees the same order as an
    uninterrupted one (Lightning calls `set_epoch` on every epoch; under DDP it shards this sampler)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

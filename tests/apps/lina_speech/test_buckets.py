"""LengthBuckets: every utterance once an epoch, a new order each epoch, the same on every DDP rank, and batches
of similar lengths (less padding than random batches), also for each rank's strided share under DDP."""

import torch

from apps.lina_speech.buckets import LengthBuckets


def padded(order: list[int], lengths: list[int], batch: int) -> int:
    batches = [order[s : s + batch] for s in range(0, len(order), batch)]
    return sum(max(lengths[i] for i in b) * len(b) for b in batches)


def test_length_buckets():
    lengths = torch.randint(20, 260, (203,), generator=torch.Generator().manual_seed(0)).tolist()
    sampler = LengthBuckets(lengths, batch_size=8, window=4, seed=3)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == sorted(second) == list(range(203)) and first != second
    assert list(LengthBuckets(lengths, 8, window=4, seed=3)) == first  # what another rank draws
    resumed = LengthBuckets(lengths, 8, window=4, seed=3)
    resumed.set_epoch(1)  # a run resumed at epoch 1 draws the uninterrupted run's second order
    assert list(resumed) == second
    random = torch.randperm(203, generator=torch.Generator().manual_seed(1)).tolist()
    # Windows of 32 of 203 lengths uniform in [20, 260): a batch spans ~1/4 of the range, random ones reach near
    # the top: about 0.7x the padded steps expected; 0.85x fails a sampler that does not sort.
    assert padded(first, lengths, 8) < 0.85 * padded(random, lengths, 8)
    ddp = list(LengthBuckets(lengths, batch_size=8, world_size=2, window=4, seed=3))
    for rank in (0, 1):  # DistributedSamplerWrapper's share: every 2nd index
        share = ddp[rank::2]
        assert padded(share, lengths, 8) < 0.85 * padded(random[rank::2], lengths, 8)

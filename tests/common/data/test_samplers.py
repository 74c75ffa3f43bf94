from __future__ import annotations

from common.data.samplers import EpochShuffle


def test_epoch_shuffle_is_a_function_of_seed_and_epoch():
    a, b = EpochShuffle(50, seed=1), EpochShuffle(50, seed=1)
    first = list(a)
    assert sorted(first) == list(range(50)) and list(b) == first  # same seed, same epoch: same order
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second  # a resumed run (fresh sampler, epoch set) repeats the order

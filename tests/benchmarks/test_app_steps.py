"""app_steps' bookkeeping: the compile modes it measures, the packed long sequences (lina_speech at 4k frames) and
the replayed batches."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from benchmarks.app_steps import MODES, dynamo_counts, replay_train_batches
from benchmarks.packing import pack


@dataclass
class _Utt:  # the fields of apps.lina_speech.table.Utterance that packing touches
    id: str
    split: str
    text: str
    text_ids: torch.Tensor
    codes: torch.Tensor


def _utts(lengths):
    return [
        _Utt(str(i), "train", f"t{i}", torch.full((i + 1,), i), torch.arange(n * 2).view(n, 2) + 100 * i)
        for i, n in enumerate(lengths)
    ]


def test_pack_joins_consecutive_utterances_to_exact_lengths():
    utts = _utts([3, 4, 2, 6, 1])
    out = pack(utts, 5)
    assert [u.codes.shape for u in out] == [torch.Size([5, 2])] * 2  # 3+4 and 2+6; the tail (1 frame) is dropped
    first = out[0]
    assert first.id == "0+1" and first.text == "t0 t1" and first.split == "train"
    assert [len(u.text_ids) for u in out] == [3, 3]  # 1+2 ids; 3+4 cut to the shortest: one shape a batch
    assert torch.equal(first.text_ids, torch.cat([utts[0].text_ids, utts[1].text_ids]))
    assert torch.equal(first.codes, torch.cat([utts[0].codes, utts[1].codes[:2]]))  # frames kept in order
    assert pack(utts, 100) == []


def test_modes_keep_eager_first_and_the_new_mode_before_compile_true():
    assert MODES["all"] == (False, "reduce-overhead", True) and MODES["both"] == (False, True)


def test_dynamo_counts_sees_a_graph_break_and_a_new_shape():
    def f(x):
        x = x * 2
        torch._dynamo.graph_break()
        return x + 1

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    g = torch.compile(f, backend="eager")
    g(torch.ones(3))
    assert dynamo_counts() == {"graph_breaks": 1, "graphs": 2}  # the break splits f in two
    g(torch.ones(3, dtype=torch.int64))  # a new dtype: both parts recompile
    assert dynamo_counts() == {"graph_breaks": 2, "graphs": 4}
    torch._dynamo.reset()


def test_replayed_batches_are_drawn_once_and_repeated_in_order():
    class Data:
        drawn = 0

        def setup(self, stage):
            self.stage = stage

        def train_dataloader(self):
            for i in range(10):
                Data.drawn += 1
                yield torch.full((2,), i)

    data = Data()
    replay_train_batches(data, 3, 7)
    assert data.stage == "fit" and Data.drawn == 3  # the loader ran for 3 batches only
    assert [int(b[0]) for b in data.train_dataloader()] == [0, 1, 2, 0, 1, 2, 0]
    assert Data.drawn == 3

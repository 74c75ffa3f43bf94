"""Token metrics under DDP: the test split scored by 2 processes (ddp_cpu's trainer, fork launcher; see
tests/common/pipeline/test_ddp_metrics.py) equals 1 process, each utterance once, and 1 process equals the
token-weighted mean computed utterance by utterance."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from apps.lina_speech.data import LinaSpeechDataModule, collate
from apps.lina_speech.module import LinaSpeechModule
from apps.lina_speech.tokens import BOS
from tests.apps.lina_speech.conftest import tiny
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def test_token_metrics_of_two_processes_are_those_of_one(table_dir):
    L.seed_everything(0, verbose=False)
    dm = LinaSpeechDataModule(source="tokens", root=str(table_dir), batch_size=2)
    dm.setup("fit")
    dm.table.utterances.remove(dm.utterances("test")[0])  # every sentence has 2 voices: make the split odd
    test = dm.utterances("test")
    assert len(test) % 2 == 1  # rank 1 gets a repeat of the first utterance
    module = LinaSpeechModule(tiny().float(), optimizer=lambda p: torch.optim.AdamW(p))
    module.set_unigram(dm.unigram_counts())
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=dm, verbose=False)[0])
    assert one.keys() == two.keys() and "test/unigram_acc" in one
    # Same utterances, same weights, batched differently: float32 logits equal to rounding, sums in float64.
    # A repeated utterance moves a metric by ~1/11 of itself: relative 1e-5 leaves room for rounding only.
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

    with torch.no_grad():  # the loss is the mean over every kept target of the split
        total, count = 0.0, 0
        for u in test:
            b = collate([u])
            logits = module.model.logits(b["text"], b["audio_in"])
            total += float(module.model.loss(logits, b["target"])) * int((b["target"] != BOS).sum())
            count += int((b["target"] != BOS).sum())
    assert one["test/loss"] == pytest.approx(total / count, rel=1e-5)

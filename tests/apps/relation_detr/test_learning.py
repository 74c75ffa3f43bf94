"""Relation-DETR learns: one epoch of the default config (250 steps from scratch, seed 42) keeps most of the
validation map_50 that the README measured for that epoch of the same run."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

# README (Results table, `make train app=relation_detr`, seed 42): val map_50 0.158 after epoch 1. This test
# repeats that epoch, so only numerics move the number: the same seed on other
# numerics (H200 bf16 against CPU fp32) moved the detection apps' map_50 by 7-9% (both READMEs). 0.6x the
# measurement leaves four times that drift and still fails a change that loses 40% of the first epoch's learning.
README_VAL_MAP_50_EPOCH_1 = 0.158


@pytest.mark.slow
def test_one_epoch_of_the_default_keeps_most_of_the_measured_map_50(tmp_path):
    # ~3 min on 2 quiet cores; 1800 s because a contended CPU ran past run_cli's default 600 s
    run_cli("train", "app=relation_detr", "max_epochs=1", "trainer=cpu", "test=false", "callbacks.progress_bar=null",
            root=tmp_path, timeout=1800)  # fmt: skip
    metrics = json.loads((tmp_path / "runs" / "relation_detr" / "latest" / "metrics.json").read_text())
    assert metrics["steps"] == 250
    assert metrics["val"]["map_50"] > 0.6 * README_VAL_MAP_50_EPOCH_1, metrics["val"]

"""The default BiFormer training learns: one epoch on a 4,096-image Fashion-MNIST subset beats chance by far."""

from __future__ import annotations

import json

import pytest

from common.vision.data import FASHION_MNIST_PACKAGE
from tests.conftest import run_cli

CHANCE = 0.1  # 10 balanced classes
MIN_ACC = 0.6  # measured ~0.7 after one epoch of 16 steps (batch 256); a broken model stays near 0.1


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_PACKAGE.is_dir(), reason="dataset-fashion-mnist not installed")
def test_default_training_beats_chance(tmp_path):
    run_cli(
        "train", "app=biformer", "max_epochs=1", "data.limit_train=4096", "data.limit_eval=1000",
        "callbacks.progress_bar=null", root=tmp_path,
    )  # fmt: skip
    metrics = json.loads(next((tmp_path / "runs" / "biformer").glob("2*/metrics.json")).read_text())
    assert metrics["test"]["acc"] >= MIN_ACC > CHANCE

"""Each vision app's default training learns: one epoch on a 4,096-image Fashion-MNIST subset beats chance by far."""

from __future__ import annotations

import json

import pytest

from common.vision.data import FASHION_MNIST_PACKAGE
from tests.conftest import run_cli

CHANCE = 0.1  # 10 balanced classes
# Measured after one epoch at the default seed: biformer ~0.7 (16 steps of 256), fmvit 0.724 (32 steps of 128); a
# broken model stays near 0.1. 0.6 sits 0.1 below the measured values, seven standard errors of an accuracy on 1,000
# test images (0.014 at 0.7); how much of that margin seed-to-seed spread takes was not measured. A model blind to
# the pixels (expected accuracy at most 0.115, the majority share of these 1,000 labels) passes with probability
# below 1e-200 (Hoeffding).
MIN_ACC = 0.6


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_MNIST_PACKAGE.is_dir(), reason="dataset-fashion-mnist not installed")
@pytest.mark.parametrize("app", ["biformer", "fmvit"])
def test_default_training_beats_chance(app, tmp_path):
    run_cli(
        "train", f"app={app}", "max_epochs=1", "data.limit_train=4096", "data.limit_eval=1000",
        "callbacks.progress_bar=null", root=tmp_path,
    )  # fmt: skip
    metrics = json.loads(next((tmp_path / "runs" / app).glob("2*/metrics.json")).read_text())
    assert metrics["test"]["acc"] >= MIN_ACC > CHANCE

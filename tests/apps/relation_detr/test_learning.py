"""Relation-DETR learns: one epoch of the default config (250 steps from scratch, seed 42) keeps most of the
validation map_50 that the README measured for that epoch of the same run."""

from __future__ import annotations

import pytest

from tests.apps.detr_first_epoch import assert_first_epoch_keeps_map_50

# README (Results table, `make train app=relation_detr`, seed 42): val map_50 0.158 after epoch 1.
README_VAL_MAP_50_EPOCH_1 = 0.158


@pytest.mark.slow
def test_one_epoch_of_the_default_keeps_most_of_the_measured_map_50(tmp_path):
    assert_first_epoch_keeps_map_50("relation_detr", README_VAL_MAP_50_EPOCH_1, tmp_path)

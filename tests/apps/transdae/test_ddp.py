"""Segmentation metrics under DDP: three held-out volumes scored by 2 processes (ddp_cpu's trainer, fork launcher;
see tests/common/pipeline/test_ddp_metrics.py) give the Dice and HD95 of 1 process, each volume counted once."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from apps.transdae.data import TransDAEDataModule
from apps.transdae.model import create
from apps.transdae.module import TransDAEModule, predict_volume
from common.medical.seg_metrics import summarize, volume_scores
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def test_volume_metrics_of_two_processes_are_those_of_one(tmp_path):
    # three test slabs: rank 0 scores volumes 0 and 2, rank 1 volume 1 and a repeat of volume 0
    slabs = [[0.10, 0.16], [0.30, 0.36], [0.70, 0.76]]
    data = TransDAEDataModule(data_dir=str(tmp_path), img_size=32, augment=False, test_slabs=slabs, gap=1)
    data.prepare_data()
    data.setup("test")
    torch.manual_seed(0)
    model = create("transdae", **data.model_kwargs(), dims=(8, 16, 32), depths=(1, 1, 1), channel_heads=4).eval()
    volumes = list(data.volumes("test"))
    assert len(volumes) == 3
    names = data.class_names
    scores = [volume_scores(predict_volume(model, v["image"], 32), v["label"], 4, v["spacing"]) for v in volumes]
    expected, padded = summarize(scores, names), summarize(scores + scores[:1], names)
    assert abs(padded["dice"] - expected["dice"]) > 1e-3  # a counted repeat would show

    module = TransDAEModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=data, verbose=False)[0])
    assert one.keys() == two.keys() and {"test/dice", "test/hd95", "test/dice_csf"} <= one.keys()
    # The same volumes through the same weights, one volume per step in both: Dice and HD95 are float64
    # reductions of identical predictions, so they agree to float rounding (1e-9); a repeat moves Dice by > 1e-3.
    for key, value in one.items():
        assert two[key] == pytest.approx(value, rel=1e-9, abs=1e-9), key
        assert value == pytest.approx(expected[key.removeprefix("test/")], rel=1e-6, abs=1e-6), key

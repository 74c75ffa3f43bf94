"""Point-cloud metrics under DDP: the test shapes scored by 2 processes (ddp_cpu's trainer, fork launcher; see
tests/common/pipeline/test_ddp_metrics.py) are those of 1 process, each shape once."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from apps.risurconv.data import RISurConvDataModule
from apps.risurconv.model import create
from apps.risurconv.module import RISurConvModule
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)

TINY = {
    "risurconv": {"npoints": [32, 16, 8, 4], "ks": [8, 8, 8, 4], "widths": [8, 8, 8, 8, 8], "transformer_heads": 2},
    "risurconv_partseg": {"npoints": [32, 16, 8, 4], "ks": [8, 8, 8, 4], "fp_ks": [8, 8, 8, 4], "widths": [8] * 4},
}


@pytest.mark.parametrize("task", ["cls", "partseg"])
def test_metrics_of_two_processes_are_those_of_one(tmp_path, task):
    L.seed_everything(0, verbose=False)
    per_class = {"train": 1, "val": 1, "test": 1}
    data = RISurConvDataModule(task=task, data_dir=str(tmp_path), num_points=64, per_class=per_class, batch_size=4)
    data.prepare_data()
    data.setup("fit")
    n = len(data.splits["test"]["label"])
    assert n % 2 == 1  # rank 1 gets a repeat of the first shape
    module = RISurConvModule(create(**data.model_kwargs(), **TINY), optimizer=partial(torch.optim.Adam, lr=1e-3))
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=data, verbose=False)[0])
    names = {"cls": "acc_so3", "partseg": "miou_so3"}
    assert one.keys() == two.keys() and f"test/{names[task]}" in one and "test/loss_z" in one
    # The same shapes through the same weights: predictions equal, losses equal to float32 rounding (1e-6). A
    # shape counted twice moves a metric by ~1/n (n ~ 10): rel 1e-5 leaves room for rounding only.
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

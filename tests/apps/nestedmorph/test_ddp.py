"""Registration metrics under DDP: the test pairs scored by 2 processes (ddp_cpu's trainer, fork launcher; see
tests/common/pipeline/test_ddp_metrics.py) are those of 1 process, each pair once, real pairs apart. Slow lane:
16 CPU-s (71 s wall) on the loaded 2-core machine, over this app's share of the default lane's budget."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from apps.nestedmorph.data import NestedMorphDataModule
from apps.nestedmorph.model import RegistrationNet
from apps.nestedmorph.module import NestedMorphModule
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


@pytest.mark.slow
def test_registration_metrics_of_two_processes_are_those_of_one(cubes_dir):
    L.seed_everything(0, verbose=False)
    data = NestedMorphDataModule(data_dir=str(cubes_dir), size=32, test_pairs=1)
    data.prepare_data()
    data.setup("test")
    assert len(data.datasets["test"]) == 3  # odd: rank 1 gets a repeat of the first (synthetic) pair
    model = RegistrationNet(size=32, dims=(8, 16, 32, 64), decoder_depth=1)
    with torch.no_grad():  # a visible displacement, so that registered and identity metrics differ
        model.net.flow.weight.normal_(0.0, 0.05)
    module = NestedMorphModule(model, optimizer=lambda p: torch.optim.Adam(p))
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=data, verbose=False)[0])
    assert one.keys() == two.keys() and {"test/dice", "test/dice_real", "test/sdlogj_real"} <= one.keys()
    assert one["test/sdlogj"] > 0 and one["test/dice"] != one["test/dice_identity"]
    # The same pairs through the same weights: per-pair metrics equal up to float32 rounding of the forward (a
    # batch of one either way); the means are float64. Relative 1e-5 leaves no room for a repeated pair, which
    # would move the synthetic means by a third (it is scored with another pair) or the real ones by half.
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

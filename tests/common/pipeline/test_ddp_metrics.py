"""The distributed path on CPU: an eval split scored by 2 DDP processes gives the metrics of 1 process.

Lightning deals an eval split to the ranks with a DistributedSampler that pads it by repeating its first rows;
`common.data.distributed` tells those repeats apart, and the shared modules leave them out. The splits here have
an odd length, so a repeat is always there to be counted twice if it were not left out.

The 2 processes are `configs/trainer/ddp_cpu.yaml`'s trainer (CPU, 2 devices, DDPStrategy over gloo) started
with Lightning's fork launcher (`ddp_fork`): the config's `ddp` launcher re-runs the command line, which under
pytest would be pytest itself. The strategy, the process group, the samplers and the metric syncs are the same.
"""

from __future__ import annotations

import copy
import functools
from datetime import timedelta

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.strategies import DDPStrategy
from torch import nn
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset

from common.data.distributed import SplitRows, split_positions
from common.vision.module import ImageClassificationModule
from tests.conftest import REPO

DDP_CPU = yaml.safe_load((REPO / "configs" / "trainer" / "ddp_cpu.yaml").read_text())


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread per process: the two ranks share the machine's 2 cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def trainer(processes: int, **kw) -> L.Trainer:
    """One process on the CPU, or the ddp_cpu config's processes launched by fork."""
    options = dict(
        accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    if processes > 1:
        assert DDP_CPU["strategy"] == "ddp" and DDP_CPU["devices"] == processes and DDP_CPU["accelerator"] == "cpu"
        # a rank stuck in a collective (a regression of the fixes tested here) fails the test after 2 minutes
        options |= {"devices": processes, "strategy": DDPStrategy(start_method="fork", timeout=timedelta(seconds=120))}
    return L.Trainer(**(options | kw))


def one_and_two_processes(module, run, **trainer_kw) -> tuple:
    """`run(trainer, module)` with 1 and with 2 processes, each on its own copy of `module` (the ranks are
    forked from this process: a module that a run has touched would carry that run's state)."""
    return tuple(run(trainer(p, **trainer_kw), copy.deepcopy(module)) for p in (1, 2))


class _Stage:
    """The parts of a Trainer that `split_positions` reads, around one eval loader."""

    testing, predicting = True, False

    def __init__(self, loader):
        self.test_dataloaders = loader


@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("n, world, batch", [(7, 2, 2), (5, 3, 4), (6, 2, 3), (1, 2, 1)])
def test_positions_are_the_samplers_rows_and_flag_its_repeats(n, world, batch, wrapped):
    """Against torch's DistributedSampler (and Lightning's wrapper of a custom sampler): the positions name the
    rows each rank really reads, the repeats sit past n, and the ranks' real rows are the split once."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
    from torch.utils.data import DistributedSampler

    data = TensorDataset(torch.arange(n) * 10)
    seen = []
    for rank in range(world):
        if wrapped:
            sampler = DistributedSamplerWrapper(SequentialSampler(data), num_replicas=world, rank=rank, shuffle=False)
        else:
            sampler = DistributedSampler(data, num_replicas=world, rank=rank, shuffle=False)
        loader = DataLoader(data, batch_size=batch, sampler=sampler)
        for batch_idx, (values,) in enumerate(loader):
            positions, size = split_positions(_Stage(loader), batch_idx, len(values))
            assert size == n
            real = positions < n
            assert torch.equal(values[real], positions[real] * 10)
            seen += positions[real].tolist()
    assert sorted(seen) == list(range(n))


class _Classifier(nn.Module):
    num_classes = 7

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 7))

    def forward(self, images):
        return self.net(images)


def test_vision_test_metrics_of_two_processes_are_those_of_one():
    """ImageClassificationModule (every vision app's): 37 images in batches of 8 -> rank 1 gets one repeat."""
    torch.manual_seed(0)
    images, labels = torch.randn(37, 3, 8, 8), torch.randint(0, 7, (37,))
    loader = DataLoader(TensorDataset(images, labels), batch_size=8)
    module = ImageClassificationModule(_Classifier(), optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    with torch.no_grad():
        logits = module.model(images)
    expected = {
        "test/acc": (logits.argmax(1) == labels).double().mean().item(),
        "test/acc_top5": (logits.topk(5).indices == labels[:, None]).any(1).double().mean().item(),
        "test/loss": nn.functional.cross_entropy(logits.double(), labels).item(),
    }
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, dataloaders=loader, verbose=False)[0])
    # accuracies are integer counts over 37: equal exactly; the loss is a float32 sum over 37 rows taken in
    # another grouping (ranks, batch shapes), equal to float32 rounding: relative 1e-5 is 37 x float32's 2.4e-7
    for metrics in (one, two):
        assert metrics["test/acc"] == pytest.approx(expected["test/acc"], abs=1e-7)
        assert metrics["test/acc_top5"] == pytest.approx(expected["test/acc_top5"], abs=1e-7)
        assert metrics["test/loss"] == pytest.approx(expected["test/loss"], rel=1e-5)
    assert two["test/acc"] == one["test/acc"] and two["test/acc_top5"] == one["test/acc_top5"]
    assert 0 < one["test/acc"] < 1  # a counted repeat would move it (one more hit or miss over 38)


class _RowsModule(L.LightningModule):
    """Each test row's value and position through SplitRows: what the ranks gather, in split order."""

    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.rows = SplitRows()
        self.gathered: dict = {}

    def test_step(self, batch, batch_idx):
        self.rows.add(self.trainer, batch_idx, value=batch[0])

    def on_test_epoch_end(self):
        value = self.rows.gather()["value"]
        self.log("test/count", float(len(value)))
        self.log("test/in_order", float(torch.equal(value, torch.arange(len(value)) * 3)))


def test_split_rows_gather_each_row_once_in_split_order():
    loader = DataLoader(TensorDataset(torch.arange(11) * 3), batch_size=2)
    one, two = one_and_two_processes(_RowsModule(), lambda t, m: t.test(m, dataloaders=loader, verbose=False)[0])
    assert one == two == {"test/count": 11.0, "test/in_order": 1.0}

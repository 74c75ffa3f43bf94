from __future__ import annotations

import functools

import torch
from torch.optim.lr_scheduler import LambdaLR, MultiStepLR, ReduceLROnPlateau

from common.utils.schedulers import with_scheduler
from common.vision.schedule import warmup_cosine


class FakeTrainer:
    estimated_stepping_batches = 40


def _opt():
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)


def test_no_scheduler_returns_the_optimizer():
    opt = _opt()
    assert with_scheduler(opt, None, FakeTrainer()) is opt


def test_a_run_length_schedule_steps_every_batch_over_the_trainers_steps():
    out = with_scheduler(_opt(), functools.partial(warmup_cosine, min_lr_ratio=0.0), FakeTrainer())
    config = out["lr_scheduler"]
    assert isinstance(config["scheduler"], LambdaLR) and config["interval"] == "step" and "monitor" not in config
    lrs = []
    for _ in range(FakeTrainer.estimated_stepping_batches):
        out["optimizer"].step()
        config["scheduler"].step()
        lrs.append(out["optimizer"].param_groups[0]["lr"])
    assert lrs[-1] == 0.0 and lrs[-2] > 0.0  # the cosine ends exactly at the trainer's last step


def test_a_given_total_steps_is_kept():
    out = with_scheduler(_opt(), functools.partial(warmup_cosine, total_steps=4, min_lr_ratio=0.0), FakeTrainer())
    for _ in range(4):
        out["optimizer"].step()
        out["lr_scheduler"]["scheduler"].step()
    assert out["optimizer"].param_groups[0]["lr"] == 0.0


def test_other_schedules_step_every_epoch_and_plateau_gets_the_monitor():
    step = with_scheduler(_opt(), functools.partial(MultiStepLR, milestones=[2]), FakeTrainer(), monitor="val/mae")
    assert step["lr_scheduler"] == {"scheduler": step["lr_scheduler"]["scheduler"], "interval": "epoch"}
    plateau = with_scheduler(_opt(), functools.partial(ReduceLROnPlateau, patience=1), FakeTrainer(), monitor="val/mae")
    config = plateau["lr_scheduler"]
    assert isinstance(config["scheduler"], ReduceLROnPlateau)
    assert config["interval"] == "epoch" and config["monitor"] == "val/mae"

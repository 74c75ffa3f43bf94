"""Resume must resume: `last.ckpt` every epoch whatever the monitor does, the random state inside it, the run's own
config on resume, `latest` only at a run with a checkpoint, and an interrupted run that says how to resume.

The in-process tests interrupt a tiny Lightning run by raising from a callback (the process's random state is then
scrambled, as a new process would have it); the CLI tests (test_killed_run_resumes_exactly) kill a real training
process mid-run, at a later epoch, for one app per domain, and compare with an uninterrupted run bit for bit."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from omegaconf import OmegaConf, open_dict
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.errors import ManyheadsError
from common.pipeline.callbacks import RandomState
from common.pipeline.checkpoints import AtomicCheckpointIO, LastCheckpoint
from common.pipeline.runs import resumed_config
from common.pipeline.safety import load_checkpoint
from tests.conftest import REPO, run_cli

# ---- the run config on resume ---------------------------------------------------------------------------------


def _today():
    """Today's composition as Hydra hands it over: literals, interpolations, `_target_`s; struct mode."""
    cfg = OmegaConf.create(
        {
            "seed": 42,
            "max_epochs": 10,
            "ckpt_path": "last",
            "paths": {"run_dir": "${oc.env:NO_SUCH_VARIABLE,/here}/run"},  # like ${hydra:runtime.output_dir}
            "trainer": {"_target_": "lightning.Trainer", "max_epochs": "${max_epochs}", "accelerator": "auto"},
            "model": {"_target_": "apps.x.Model", "dim": 64, "dropout": 0.1, "added_since": 3},
            "callbacks": {"plots": {"_target_": "common.pipeline.callbacks.Plots", "plot_dir": "${paths.run_dir}/p"}},
        }
    )
    OmegaConf.set_struct(cfg, True)
    return cfg


def _stored(**changes):
    stored = {
        "seed": 7,
        "max_epochs": 30,
        "ckpt_path": None,
        "paths": {"run_dir": "/elsewhere/run"},
        "trainer": {"_target_": "lightning.Trainer", "max_epochs": 30, "accelerator": "cpu"},
        "model": {"_target_": "apps.x.Model", "dim": 16, "dropout": 0.0},
        "callbacks": {"plots": {"_target_": "common.pipeline.callbacks.Plots", "plot_dir": "/elsewhere/run/p"}},
    }
    stored.update(changes)
    return OmegaConf.create(stored)


def test_resumed_config_is_the_runs_own():
    cfg = resumed_config(_today(), _stored(), ["app=x", "ckpt_path=last"])
    assert cfg.seed == 7 and cfg.max_epochs == 30 and cfg.trainer.accelerator == "cpu"
    assert cfg.model.dim == 16 and cfg.model.dropout == 0.0
    assert cfg.trainer.max_epochs == 30  # an interpolation, derived again from the run's max_epochs
    assert cfg.callbacks.plots.plot_dir == "/here/run/p"  # derived here, not the folder the run was written in
    assert cfg.model.added_since == 3 and cfg.ckpt_path == "last"


def test_resumed_config_takes_only_the_given_overrides():
    today = _today()
    with open_dict(today):  # as Hydra composes `max_epochs=50 trainer=gpu model.dropout=0.3`... minus the last
        today.max_epochs, today.trainer.accelerator, today.model.dropout = 50, "gpu", 0.3
    cfg = resumed_config(today, _stored(), ["max_epochs=50", "trainer=gpu", "~callbacks.plots"])
    assert cfg.max_epochs == 50 and cfg.trainer.max_epochs == 50
    assert cfg.trainer.accelerator == "gpu"  # a group override takes today's whole group node
    assert cfg.model.dropout == 0.0  # not given: the run's value, not today's
    assert "plots" not in cfg.callbacks


def test_resumed_config_takes_no_code_from_the_stored_config():
    stored = _stored(model={"_target_": "os.system", "dim": 16})
    assert resumed_config(_today(), stored, [])["model"]["_target_"] == "apps.x.Model"
    evil = {"x": {"_target_": "torch.utils.collect_env.run", "command": "touch pwned"}}
    with pytest.raises(ManyheadsError, match=r"callbacks\.x with a _target_"):
        resumed_config(_today(), _stored(callbacks=evil), [])


# ---- last.ckpt and the random state, in process ----------------------------------------------------------------


class Noisy(L.LightningModule):
    """Dropout, a shuffled loader and numpy/Python draws in every step: each random source shows in the weights.
    `val/score` gets worse after epoch 0, so the top-1 checkpoint stays at epoch 0."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.Dropout(0.5), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        jitter = float(np.random.rand()) + random.random()
        return nn.functional.mse_loss(self.net(x + 1e-3 * jitter), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/score", float(self.current_epoch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        return DataLoader(TensorDataset(torch.randn(24, 4, generator=g), torch.randn(24, 1, generator=g)), 4, True)

    def val_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(2, 4)), batch_size=2)


class Interrupt(L.Callback):
    """Stand-in for a kill at the start of epoch `at` (after `last.ckpt` of the epoch before was written)."""

    def __init__(self, at: int):
        self.at = at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.at:
            raise RuntimeError("interrupted")


def _fit(root: Path, epochs: int, *extra, resume: bool = False, random_state: bool = True, every_n=None):
    L.seed_everything(3)
    if resume:  # a new process: the global generators start from the seed, not where the killed run was
        torch.manual_seed(123), np.random.seed(123), random.seed(123)
    module = Noisy()
    best = L.pytorch.callbacks.ModelCheckpoint(dirpath=root, filename="best", monitor="val/score")
    callbacks = [best, *([RandomState()] if random_state else []), *extra, LastCheckpoint(root, every_n)]
    trainer = L.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    trainer.fit(module, ckpt_path=str(root / "last.ckpt") if resume else None)
    return module.state_dict()


def test_last_ckpt_is_every_epoch_whatever_the_monitor(tmp_path):
    _fit(tmp_path, 3)
    assert load_checkpoint(tmp_path / "best.ckpt")["epoch"] == 0  # the metric only got worse after epoch 0
    last = load_checkpoint(tmp_path / "last.ckpt")
    assert last["epoch"] == 2 and last["global_step"] == 3 * 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]  # no temporary left


def test_last_ckpt_every_n_steps(tmp_path):
    class Watch(L.Callback):
        steps = []

        def on_train_batch_end(self, trainer, *args):
            if (tmp_path / "last.ckpt").is_file():
                self.steps.append(load_checkpoint(tmp_path / "last.ckpt")["global_step"])

    watch = Watch()
    _fit(tmp_path, 1, watch, every_n=2)  # Watch runs before the checkpoint callbacks: it sees the step before
    assert watch.steps == [2, 2, 4, 4]  # saved at steps 2 and 4; step 6 ends the epoch, which saves it anyway
    assert load_checkpoint(tmp_path / "last.ckpt")["global_step"] == 6


@pytest.mark.parametrize("at", [1, 3])
def test_interrupted_run_resumes_bit_exactly(tmp_path, at):
    straight = _fit(tmp_path / "straight", 5)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(tmp_path / "killed", 5, Interrupt(at))
    assert load_checkpoint(tmp_path / "killed" / "last.ckpt")["epoch"] == at - 1
    resumed = _fit(tmp_path / "killed", 5, resume=True)
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_without_the_random_state_the_resume_drifts(tmp_path):
    """The test above could fail: the same interruption without RandomState ends at other weights."""
    straight = _fit(tmp_path / "straight", 4, random_state=False)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(tmp_path / "killed", 4, Interrupt(2), random_state=False)
    resumed = _fit(tmp_path / "killed", 4, resume=True, random_state=False)
    assert not all(torch.equal(resumed[k], v) for k, v in straight.items())

"""SLURM's requeue signal cannot deadlock a run: the signal arrives while a logger write holds a plain lock (as
TensorBoard's event writer does for every event), and the requeue work also needs that lock.

Lightning's own handler finalizes the loggers and saves the checkpoint inside the signal handler, so it waits on
the lock the interrupted write holds: the hang a full test run once met (a process asleep on a futex after
SIGUSR1). `SlurmRequeue` only raises a flag there and does the work at the next batch end."""

from __future__ import annotations

import os
import signal
import threading

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.pipeline.requeue import SlurmRequeue, hpc_checkpoint_path, slurm_requeue
from common.pipeline.safety import load_checkpoint

SLURM = dict(SLURM_JOB_ID="4242", SLURM_NTASKS="1", SLURM_JOB_NAME="train", SLURM_PROCID="0", SLURM_LOCALID="0")


class LockedLogger(Logger):
    """A plain lock around each write, taken again to finalize; the requeue signal lands inside step 3's write."""

    def __init__(self):
        super().__init__()
        self.lock = threading.Lock()
        self.steps = []

    name = property(lambda self: "locked")
    version = property(lambda self: 0)

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        with self.lock:
            self.steps.append(step)
            if len(self.steps) == 3:
                os.kill(os.getpid(), signal.SIGUSR1)  # Python runs the handler at the next bytecode: in the lock

    def finalize(self, status) -> None:
        if not self.lock.acquire(timeout=2):  # a deadlock, turned into a failure (a free lock is taken at once)
            raise TimeoutError("finalize waited on the lock its own interrupted write holds")
        self.lock.release()


class Tiny(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = self.net(batch[0]).pow(2).mean()
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(12, 4)), batch_size=2)


def _fit(root, plugins, callbacks) -> LockedLogger:
    logger = LockedLogger()
    trainer = L.Trainer(
        max_epochs=1, logger=logger, log_every_n_steps=1, plugins=plugins, callbacks=callbacks, default_root_dir=root,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )  # fmt: skip
    trainer.fit(Tiny())
    return logger


@pytest.fixture
def slurm(monkeypatch):
    for key, value in SLURM.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("common.pipeline.requeue.requeue_job", lambda: None)  # no scontrol here
    previous = signal.getsignal(signal.SIGUSR1)
    yield
    signal.signal(signal.SIGUSR1, previous)


def test_requeue_signal_inside_a_locked_write_saves_at_the_next_batch(tmp_path, slurm):
    plugins, callbacks = slurm_requeue()
    assert [type(c) for c in callbacks] == [SlurmRequeue] and not plugins[0].auto_requeue
    logger = _fit(tmp_path, plugins, callbacks)
    assert len(logger.steps) == 6  # the run went on to its end
    # written at the batch end after the signal (step 3's log comes after step 3's batch-end hooks): step 4
    assert load_checkpoint(tmp_path / "hpc_ckpt_1.ckpt")["global_step"] == 4
    assert hpc_checkpoint_path(tmp_path).name == "hpc_ckpt_2.ckpt"


def test_lightnings_own_handler_waits_on_that_lock(tmp_path, slurm):
    """The test above could fail: Lightning's requeue handler, in the same place, waits on the lock."""
    with pytest.raises(TimeoutError, match="its own interrupted write"):
        _fit(tmp_path, [], [])  # Lightning detects SLURM itself, with auto_requeue on
    assert not (tmp_path / "hpc_ckpt_1.ckpt").exists()

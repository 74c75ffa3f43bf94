"""A resumed run keeps its logs: the CSV metrics cover every epoch of the run (Lightning's CSVLogger deletes the
file it finds), and Hydra's files of the first start stay as written (a resume writes its own to .hydra/resume-*)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pandas as pd
import pytest
import torch
import yaml
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from common.pipeline.callbacks import RandomState, keep_csv_log
from common.pipeline.checkpoints import AtomicCheckpointIO, LastCheckpoint
from common.pipeline.safety import load_checkpoint
from tests.conftest import REPO


class Logged(L.LightningModule):
    """Logs its loss every step and every epoch, and a validation loss: the rows a learning-curve plot reads."""

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        loss = nn.functional.mse_loss(self.net(batch[0]), batch[1])
        self.log("train/loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", nn.functional.mse_loss(self.net(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def _loader(self, n, shuffle):
        g = torch.Generator().manual_seed(n)
        return DataLoader(TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g)), 4, shuffle)

    def train_dataloader(self):
        return self._loader(24, True)

    def val_dataloader(self):
        return self._loader(8, False)


class KillAt(L.Callback):
    """Stand-in for a kill in the middle of epoch `epoch`, after rows past its last checkpoint reached the file."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            raise RuntimeError("killed")


def _fit(root: Path, *extra, resume: bool = False, keep: bool = True) -> Path:
    L.seed_everything(5)
    logger = CSVLogger(root, name="logs", version="csv", flush_logs_every_n_steps=1)  # as configs/logger
    trainer = L.Trainer(
        max_epochs=4,
        callbacks=[RandomState(), *extra, LastCheckpoint(root)],
        plugins=[AtomicCheckpointIO()],
        logger=logger,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=root,
    )
    ckpt = root / "last.ckpt" if resume else None
    if resume and keep:
        keep_csv_log(trainer.loggers, load_checkpoint(ckpt))
    trainer.fit(Logged(), ckpt_path=ckpt)
    return root / "logs" / "csv" / "metrics.csv"


def test_killed_and_resumed_run_logs_what_an_uninterrupted_run_logs(tmp_path):
    straight = _fit(tmp_path / "straight").read_text()
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path / "killed", KillAt(epoch=2, batch=3))
    log = pd.read_csv(tmp_path / "killed" / "logs" / "csv" / "metrics.csv")
    assert log["epoch"].max() == 2  # rows of epoch 2 past the checkpoint of epoch 1: the resume logs them again
    resumed = _fit(tmp_path / "killed", resume=True).read_text()
    assert resumed == straight  # every row, once, with the same values (the resume is bit-exact on CPU)
    assert sorted(pd.read_csv(tmp_path / "killed" / "logs" / "csv" / "metrics.csv")["epoch"].unique()) == [0, 1, 2, 3]


def test_without_keep_csv_log_the_resumed_log_starts_at_the_resume(tmp_path):
    """The test above could fail: Lightning alone deletes the earlier rows."""
    with pytest.raises(RuntimeError, match="killed"):
        _fit(tmp_path, KillAt(epoch=2, batch=3))
    epochs = pd.read_csv(_fit(tmp_path, resume=True, keep=False))["epoch"].unique()
    assert sorted(epochs) == [2, 3]


def _train(args: list[str], root: Path) -> None:
    env = dict(os.environ, MANYHEADS_ROOT=str(root), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "common.pipeline.train", *args]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_resumed_run_keeps_its_csv_log_and_its_hydra_files(tmp_path):
    """A finished 2-epoch run resumed to 4 epochs (`ckpt_path=last max_epochs=4`): the CSV log and the learning
    curves hold epochs 0-3; `.hydra/` keeps the first start's files, the resume's are in `.hydra/resume-<time>/`."""
    args = ["app=crypto_forecast", "data.limit_rows=400", "model.dim=16", "model.lstm_hidden=8", "trainer=cpu"]
    args += ["callbacks.progress_bar=null", f"data.data_dir={tmp_path / 'data'}"]
    _train([*args, "max_epochs=2"], tmp_path)
    (run,) = (tmp_path / "runs" / "crypto_forecast").glob("2*")
    hydra_files = {p.name: p.read_text() for p in (run / ".hydra").glob("*.yaml")}
    assert set(hydra_files) == {"config.yaml", "hydra.yaml", "overrides.yaml"}

    _train(["app=crypto_forecast", "ckpt_path=last", "max_epochs=4", "callbacks.progress_bar=null"], tmp_path)
    assert {p.name: p.read_text() for p in (run / ".hydra").glob("*.yaml")} == hydra_files
    (resume,) = (run / ".hydra").glob("resume-*")
    assert "ckpt_path=last" in yaml.safe_load((resume / "overrides.yaml").read_text())
    log = pd.read_csv(run / "logs" / "csv" / "metrics.csv")
    assert sorted(log.dropna(subset=["val/loss"])["epoch"]) == [0, 1, 2, 3]
    assert (run / "plots" / "learning_curves.png").is_file()

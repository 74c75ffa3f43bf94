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
from common.pipeline.resume import resumed_config
from common.pipeline.safety import load_checkpoint
from tests.conftest import REPO

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


# ---- real training processes, killed mid-run -------------------------------------------------------------------


def _start(args: list[str], root: Path, log: str = "train.log", **env: str) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    # one thread each: the same numerics in every process, and two of them share CI's 2 cores
    env = dict(os.environ, MANYHEADS_ROOT=str(root), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)
    with open(root / log, "w") as out:  # a file, not a pipe: a full pipe would stall the run
        cmd = [sys.executable, "-m", "common.pipeline.train", *args]
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)


def _train(args: list[str], root: Path, log: str = "train.log", **env: str) -> int:
    code = _start(args, root, log, **env).wait(timeout=600)
    assert code in (0, 2), (root / log).read_text()[-3000:]  # 2: a user error, which the test then checks
    return code


def _when(proc: subprocess.Popen, root: Path, done, what: str) -> None:
    """Poll until `done()` while the run goes on; fail if the run ended first (too fast to be interrupted)."""
    deadline = time.time() + 600
    while not done():
        assert proc.poll() is None and time.time() < deadline, (
            f"the run ended before {what}:\n" + ((root / "train.log").read_text()[-3000:])
        )
        time.sleep(0.05)


def _at_epoch(root: Path, epoch: int):
    """Whether the run's last.ckpt holds `epoch` or a later one."""

    def done() -> bool:
        found = list(root.glob("runs/*/2*/checkpoints/last.ckpt"))
        return bool(found) and load_checkpoint(found[0])["epoch"] >= epoch

    return done


def _kill_after(proc: subprocess.Popen, root: Path, epoch: int, sig: signal.Signals) -> int:
    """Send `sig` once the run's last.ckpt holds `epoch` (or later); the exit status."""
    _when(proc, root, _at_epoch(root, epoch), f"epoch {epoch}")
    proc.send_signal(sig)
    return proc.wait(timeout=600)


def _assert_same_run(straight: Path, resumed: Path) -> None:
    """Bit for bit: metrics, epochs, steps and the final weights."""
    a, b = (json.loads((run / "metrics.json").read_text()) for run in (straight, resumed))
    assert (b["epochs"], b["steps"]) == (a["epochs"], a["steps"])
    assert b["test"] == a["test"] and b["val"] == a["val"] and b["monitor"] == a["monitor"]
    wa, wb = (load_checkpoint(run / "checkpoints" / "last.ckpt")["state_dict"] for run in (straight, resumed))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _run_dir(root: Path, app: str) -> Path:
    (run,) = (root / "runs" / app).glob("2*")
    return run


# One app per domain; each trains N epochs straight and is killed at a later epoch (not the first) of the same run.
FORECAST = [
    "app=crypto_forecast",
    "seed=7",
    "max_epochs=12",
    "data.limit_rows=400",
    "model.dim=16",
    "model.lstm_hidden=8",
    "callbacks.model_checkpoint.save_top_k=-1",  # the case: every epoch's top-k file beside last.ckpt
    "callbacks.progress_bar=null",
    "trainer=cpu",
]
VISION = [
    "app=biformer",
    "seed=7",
    "max_epochs=6",
    "data.limit_train=128",
    "data.limit_eval=64",
    "data.batch_size=32",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]
DETECTION = [
    "app=focus_detr",
    "seed=7",
    "max_epochs=5",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "model.hidden_dim=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "model.num_encoder_layers=2",
    "model.cascade=[1.0,0.5]",
    "model.num_decoder_layers=2",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


@pytest.mark.parametrize(
    "args, kill_at",
    [
        pytest.param(VISION, 2, id="biformer"),
        pytest.param(DETECTION, 2, id="focus_detr", marks=pytest.mark.slow),
    ],
)
def test_killed_run_resumes_exactly(tmp_path, args, kill_at):
    """SIGKILL (nothing gets to run) after epoch `kill_at`'s checkpoint; `ckpt_path=last` ends where an
    uninterrupted run of the same arguments ends. (scgc's is tests/apps/scgc/test_pipeline.py's.)"""
    app = args[0].removeprefix("app=")
    data = [f"data.data_dir={tmp_path / 'data'}"]  # built once by the straight run, read by the other two
    assert _train([*args, *data], tmp_path / "straight") == 0
    killed_root = tmp_path / "killed"
    assert _kill_after(_start([*args, *data], killed_root), killed_root, kill_at, signal.SIGKILL) == -signal.SIGKILL
    killed = _run_dir(tmp_path / "killed", app)
    assert not (killed / "metrics.json").exists()
    assert _train([*args, *data, "ckpt_path=last"], tmp_path / "killed", "resume.log") == 0
    _assert_same_run(_run_dir(tmp_path / "straight", app), killed)


def test_terminated_run_says_how_to_resume_and_resumes_with_its_own_config(tmp_path):
    """SIGTERM (schedulers, `kill`) ends the run with status 143 and the resume command; resuming with only the
    README's `ckpt_path=last` restores the run's own config (not today's defaults) and ends bit for bit where an
    uninterrupted run ends; config.yaml stays as written; a failed start does not move `latest`."""
    straight = _start(FORECAST, tmp_path / "straight")  # side by side with the run that gets terminated
    code = _kill_after(_start(FORECAST, tmp_path / "killed"), tmp_path / "killed", 2, signal.SIGTERM)
    assert straight.wait(timeout=600) == 0, (tmp_path / "straight" / "train.log").read_text()[-3000:]
    run = _run_dir(tmp_path / "killed", "crypto_forecast")
    log = (tmp_path / "killed" / "train.log").read_text()
    assert code == 128 + signal.SIGTERM, log[-3000:]
    assert f'make train app=crypto_forecast ARGS="ckpt_path={run}/checkpoints/last.ckpt"' in log
    assert not (run / "metrics.json").exists()
    config = (run / "config.yaml").read_text()

    root = tmp_path / "killed"
    assert _train(["app=crypto_forecast", "model.arch=nope"], root, "failed.log") == 2
    assert "model.arch='nope'" in (root / "failed.log").read_text()
    assert (root / "runs" / "crypto_forecast" / "latest").resolve() == run  # not the failed start's folder

    assert _train(["app=crypto_forecast", "ckpt_path=last", "callbacks.progress_bar=null"], root, "resume.log") == 0
    assert (root / "runs" / "crypto_forecast" / "latest").resolve() == run
    assert (run / "config.yaml").read_text() == config
    resumed = yaml.safe_load(config)
    assert resumed["max_epochs"] == 12 and resumed["data"]["limit_rows"] == 400
    _assert_same_run(_run_dir(tmp_path / "straight", "crypto_forecast"), run)


def test_requeued_slurm_job_trains_on_in_its_run_folder(tmp_path):
    """SLURM's requeue warning: on SIGUSR1 the run saves `hpc_ckpt_1.ckpt` into the run folder at the next batch end
    (`common.pipeline.requeue`; tests/common/pipeline/test_requeue.py has why not in the signal handler) and asks
    `scontrol` to requeue the job (absent here, so the run goes on until SLURM would kill it: SIGKILL). The requeued
    job (the same command, SLURM_JOB_ID, and SLURM_RESTART_COUNT=1) comes back to that folder and trains on from
    that checkpoint instead of starting a new run."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}
    slurm.update(SLURM_PROCID="0", SLURM_LOCALID="0", SLURM_NODEID="0")
    proc = _start(FORECAST, tmp_path, SLURM_RESTART_COUNT="0", **slurm)
    _when(proc, tmp_path, _at_epoch(tmp_path, 2), "epoch 2")
    proc.send_signal(signal.SIGUSR1)
    _when(proc, tmp_path, lambda: any(tmp_path.glob("runs/*/2*/hpc_ckpt_1.ckpt")), "hpc_ckpt_1.ckpt")
    proc.kill()
    proc.wait(timeout=60)
    run = _run_dir(tmp_path, "crypto_forecast")
    assert not (run / "metrics.json").exists()
    # the run may finish an epoch between SIGUSR1 and the kill: the requeued job takes the newer checkpoint
    newest = max([run / "hpc_ckpt_1.ckpt", run / "checkpoints" / "last.ckpt"], key=lambda p: p.stat().st_mtime)

    assert _train(FORECAST, tmp_path, "requeued.log", SLURM_RESTART_COUNT="1", **slurm) == 0
    assert _run_dir(tmp_path, "crypto_forecast") == run  # no new run folder
    assert f"Restored all states from the checkpoint at {newest}" in (tmp_path / "requeued.log").read_text()
    assert json.loads((run / "metrics.json").read_text())["epochs"] == 12

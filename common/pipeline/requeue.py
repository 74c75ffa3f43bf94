"""SLURM's requeue warning (`#SBATCH --signal=SIGUSR1@90 --requeue`), handled between two batches.

Lightning's own handler saves the checkpoint inside the signal handler, that is in the main thread wherever the
signal caught it. If that was inside a logger write holding a plain lock (TensorBoard's event writer takes one per
event, and the handler first finalizes the loggers, which takes it again), the process sleeps on that lock forever.
Here the handler only raises a flag; the checkpoint and the requeue come at the next batch end, a point where no
lock is held, and all ranks take that step together (the flag is reduced over the ranks).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import threading
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

log = logging.getLogger(__name__)


def slurm_requeue() -> tuple[list, list]:
    """The trainer's (plugins, callbacks) for SLURM's requeue: Lightning's in-handler requeue switched off and
    `SlurmRequeue` in its place; nothing outside SLURM."""
    if not SLURMEnvironment.detect():
        return [], []
    environment = SLURMEnvironment(auto_requeue=False)
    return [environment], [SlurmRequeue(environment.requeue_signal)]


class SlurmRequeue(L.Callback):
    """On `signum`: at the next train, validation or test batch end, write `hpc_ckpt_<n>.ckpt` into the run folder
    (the requeued job resumes from it, `common.pipeline.train`) and ask SLURM to requeue the job."""

    def __init__(self, signum: int = signal.SIGUSR1):
        self.signum = signum
        self.requested = False
        self._previous = None

    def setup(self, trainer, pl_module, stage) -> None:
        if threading.current_thread() is threading.main_thread():  # Python takes signals there only
            self._previous = signal.signal(self.signum, self._request)

    def teardown(self, trainer, pl_module, stage) -> None:
        if self._previous is not None:
            signal.signal(self.signum, self._previous)
            self._previous = None

    def _request(self, signum, frame) -> None:
        self.requested = True  # nothing else: the main thread may hold any lock right now

    def on_train_batch_end(self, trainer, *args) -> None:
        self._at_safe_point(trainer)

    def on_validation_batch_end(self, trainer, *args) -> None:
        self._at_safe_point(trainer)

    def on_test_batch_end(self, trainer, *args) -> None:
        self._at_safe_point(trainer)

    def _at_safe_point(self, trainer) -> None:
        # every rank saves at the same batch (the checkpoint is collective): one small all-reduce per batch, under
        # SLURM only; logging each step already waits for the device as long
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        self.requested = False
        log.info("SLURM requeue signal: saving the checkpoint and requeueing the job")
        for logger in trainer.loggers:  # the metrics so far reach the files before SLURM kills the job
            logger.finalize("finished")
        trainer.save_checkpoint(hpc_checkpoint_path(Path(trainer.default_root_dir)))
        if trainer.is_global_zero:
            requeue_job()


def hpc_checkpoint_path(run_dir: Path) -> Path:
    """`hpc_ckpt_<n>.ckpt` with n one past the folder's highest (Lightning's name, which it also resumes from)."""
    found = (re.fullmatch(r"hpc_ckpt_(\d+)\.ckpt", p.name) for p in run_dir.glob("hpc_ckpt_*.ckpt"))
    numbers = [int(m[1]) for m in found if m]
    return run_dir / f"hpc_ckpt_{max(numbers, default=0) + 1}.ckpt"


def requeue_job() -> None:
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array_job else os.environ["SLURM_JOB_ID"]
    try:
        code = subprocess.run(["scontrol", "requeue", job], check=False).returncode
    except FileNotFoundError:
        code = "no scontrol on this node"
    if code == 0:
        log.info(f"requeued SLURM job {job}")
    else:
        log.warning(f"requeueing SLURM job {job} failed: {code}")

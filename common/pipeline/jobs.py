"""One run folder per job. The processes of a torchrun or SLURM job start on their own, and each would name a
run folder from its own clock; here rank 0 names it and hands it to the others through a TCPStore at the address
the job's process group uses, before that group exists. A job that torchrun restarts or SLURM requeues comes back
to its folder through a link `runs/<app>/.<job>` that rank 0 points at it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from common.utils.files import point_link

RUN_DIR_KEY = "manyheads/run_dir"
WAIT = timedelta(minutes=30)  # torch's own default for a process group to form
_kept: list = []  # rank 0's store, alive for the process's life: the process group shares its server (multi-tenant)
_decided: dict[Path, Path] = {}  # asked twice in one process (Hydra copies its config), the same answer


@dataclass(frozen=True)
class Job:
    name: str  # slurm-<job id>[.<step>] or torchrun-<run id>
    rank: int
    world_size: int
    restarted: bool  # SLURM requeued it, or torchrun restarted its processes

    def link(self, app_runs: Path) -> Path:
        return app_runs / f".{self.name}"


def current_job() -> Job | None:
    """The SLURM job (and step) or torchrun run this process belongs to; None when started by hand."""
    env = os.environ
    if job := env.get("SLURM_JOB_ID"):  # first: a requeued job comes back by its SLURM id, torchrun inside or not
        name = f"slurm-{job}" + (f".{env['SLURM_STEP_ID']}" if env.get("SLURM_STEP_ID") else "")
        restarted = env.get("SLURM_RESTART_COUNT", "0") not in ("", "0")
    elif run := env.get("TORCHELASTIC_RUN_ID"):
        name, restarted = f"torchrun-{run}", env.get("TORCHELASTIC_RESTART_COUNT", "0") != "0"
    else:
        return None
    rank = int(env.get("RANK", env.get("SLURM_PROCID", "0")))
    world_size = int(env.get("WORLD_SIZE", env.get("SLURM_NTASKS", "1")))
    return Job(name, rank, world_size, restarted)


def job_run_dir(app_runs: Path, new: Callable[[], Path]) -> Path | None:
    """The job's run folder: on rank 0 the one it had before a restart (if any) or `new()`, linked for a later
    restart; on the other ranks the one rank 0 names. None outside a torchrun or SLURM job."""
    job = current_job()
    if job is None:
        return None
    if app_runs not in _decided:
        _decided[app_runs] = _agree(job, app_runs, new)
    return _decided[app_runs]


def _agree(job: Job, app_runs: Path, new: Callable[[], Path]) -> Path:
    key = f"{RUN_DIR_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}"  # a restart's store may keep the last
    if job.rank != 0:
        return Path(_store(job).get(key).decode())
    link = job.link(app_runs)
    run_dir = link.resolve() if job.restarted and link.exists() else new()
    run_dir.mkdir(parents=True, exist_ok=True)
    point_link(link, run_dir)
    if job.world_size > 1:
        store = _store(job)
        store.set(key, str(run_dir))
        _kept.append(store)
    return run_dir


def restarted_run(app_runs: Path) -> Path | None:
    """The run folder this job trained in before SLURM requeued it or torchrun restarted it."""
    job = current_job()
    if job is None or not job.restarted or not job.link(app_runs).exists():
        return None
    return job.link(app_runs).resolve()


def _store(job: Job):
    """A client of torchrun's agent store, or (srun) rank 0's server at the process group's address and port."""
    from torch.distributed import TCPStore

    if os.environ.get("TORCHELASTIC_RUN_ID"):
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        serves = job.rank == 0 and os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True"
    else:
        from lightning.fabric.plugins.environments import SLURMEnvironment

        slurm = SLURMEnvironment(auto_requeue=False)
        host, port, serves = slurm.main_address, slurm.main_port, job.rank == 0
    return TCPStore(host, port, is_master=serves, timeout=WAIT, wait_for_workers=False, multi_tenant=True)

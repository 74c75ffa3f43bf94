"""One run folder per job: the processes of a torchrun or SLURM job, started on their own, all train in the
folder rank 0 names, and a restarted (torchrun) or requeued (SLURM) job comes back to it.

Each process here is this file run as a script: it asks for Hydra's run dir the way `make train` does (the
`run_dir` resolver's function) and prints it; the rest of a training run does not take part in the choice."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from common.pipeline.jobs import current_job
from common.pipeline.runs import hydra_subdir, run_dir_for
from tests.conftest import REPO

PROBE = [sys.executable, "-m", "tests.common.pipeline.test_jobs"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "TORCHELASTIC_", "MASTER_"))}
    return dict(env, OMP_NUM_THREADS="1", **extra)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(out: Path) -> dict[str, str]:
    """Each process's run folder; and only rank 0 writes Hydra's files there (the others' `.hydra`: None)."""
    for hydra in out.glob("*.hydra"):
        assert hydra.read_text() == (".hydra" if hydra.name.startswith("rank0-") else "None"), hydra.name
    return {p.stem: p.read_text() for p in sorted(out.glob("*.txt"))}


def test_torchrun_ranks_share_rank_0s_folder_and_a_restart_comes_back(tmp_path):
    """2 processes; the first attempt fails after choosing, torchrun restarts both (--max-restarts=1)."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    cmd = [*TORCHRUN, "--standalone", "--nproc-per-node=2", "--max-restarts=1", "-m", "tests.common.pipeline.test_jobs"]
    proc = subprocess.run(
        [*cmd, str(runs), str(out), "fail-first"], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    answers = _answers(out)
    assert sorted(answers) == ["rank0-attempt0", "rank0-attempt1", "rank1-attempt0", "rank1-attempt1"]
    assert len(set(answers.values())) == 1, answers  # one folder, both ranks, both attempts
    (link,) = (runs / "app").glob(".torchrun-*")
    assert link.resolve() == Path(answers["rank0-attempt0"])
    folders = [p for p in (runs / "app").iterdir() if not p.name.startswith(".")]
    assert folders == [Path(answers["rank0-attempt0"])]


SLURM = dict(SLURM_JOB_ID="4242", SLURM_STEP_ID="0", SLURM_NODELIST="127.0.0.1", SLURM_JOB_NAME="train")


def test_slurm_tasks_share_rank_0s_folder_and_a_requeued_job_comes_back(tmp_path, monkeypatch):
    """What `srun --ntasks-per-node=2` starts: one process per task; rank 1 first, so it has to wait for rank 0."""
    runs, out = tmp_path / "runs", tmp_path / "out"
    tasks = dict(SLURM, SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="2", MASTER_PORT=str(_free_port()))
    procs = [
        subprocess.Popen([*PROBE, str(runs), str(out)], cwd=REPO, env=_env(**tasks, SLURM_PROCID=str(rank)))
        for rank in (1, 0)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    answers = _answers(out)
    assert sorted(answers) == ["rank0-attempt0", "rank1-attempt0"] and len(set(answers.values())) == 1, answers
    assert (runs / "app" / ".slurm-4242.0").resolve() == Path(answers["rank0-attempt0"])

    # requeued (one task is enough here: the ranks agree as above): back to that folder, not a new one
    monkeypatch.setattr("common.pipeline.jobs._decided", {})
    for key, value in dict(SLURM, SLURM_NTASKS="1", SLURM_PROCID="0", SLURM_RESTART_COUNT="1").items():
        monkeypatch.setenv(key, value)
    assert run_dir_for(str(runs), "app", None) == answers["rank0-attempt0"]
    monkeypatch.setenv("SLURM_RESTART_COUNT", "0")  # a new job of the same id (another cluster): a new folder
    monkeypatch.setattr("common.pipeline.jobs._decided", {})
    assert run_dir_for(str(runs), "app", None) != answers["rank0-attempt0"]


def _probe(runs: str, out: str, fail_first: bool) -> None:
    job = current_job()
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    run_dir = run_dir_for(runs, "app", None)
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{job.rank}-attempt{attempt}.hydra").write_text(str(hydra_subdir(run_dir)))
    (Path(out) / f"rank{job.rank}-attempt{attempt}.txt").write_text(run_dir)
    # rank 0's store (SLURM) must outlive the others' questions, and torchrun stops them all when one fails
    while len(list(Path(out).glob(f"*-attempt{attempt}.txt"))) < job.world_size:
        time.sleep(0.05)
    if fail_first and attempt == "0":
        raise SystemExit(1)


if __name__ == "__main__":
    _probe(sys.argv[1], sys.argv[2], fail_first=sys.argv[3:] == ["fail-first"])

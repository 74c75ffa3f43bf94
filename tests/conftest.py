"""Shared fixtures: a temporary project root for runs, exports and data; seeded, single-threaded torch."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
import torch

# Without CUDA the Triton kernels run under Triton's interpreter (the CPU lane of tests/common/attention/kernels).
# Triton reads this when `triton.language` is first imported and when a kernel is decorated, so it is set
# here, before any test module can import either.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Under pytest-xdist (`make test`: one worker per core) each worker gets its share of the cores, and so do the
# training processes its tests start (OMP_NUM_THREADS): workers that each spin OpenMP threads on every core run
# many times slower than one after the other.
if workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0")):
    threads = max(1, len(os.sched_getaffinity(0)) // workers)
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
# What Lightning's DDP launchers leave in the environment (MASTER_PORT: a free port it picked). Left there, the next
# DDP test of this process, and the training processes it starts, would reuse that port, which another xdist
# worker may have been given meanwhile.
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _ddp_env_restored():
    before = {key: os.environ.get(key) for key in DDP_ENV}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def run_cli(module: str, *args: str, root: Path, timeout: float = 600, check: bool = True):
    """Run `python -m common.pipeline.<module> args...` with MANYHEADS_ROOT=root; return the CompletedProcess."""
    env = dict(os.environ, MANYHEADS_ROOT=str(root), HYDRA_FULL_ERROR="0", PYTHONUNBUFFERED="1")
    proc = subprocess.run(
        [sys.executable, "-m", f"common.pipeline.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} {args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def side_by_side(*calls: Callable[[], T]) -> list[T]:
    """Run independent CLI calls (e.g. `lambda: run_cli(...)`) two at a time; their results in the given order.

    A CLI call is mostly interpreter start-up and imports (~6 s of one core), so two independent calls (evaluate
    and export of one checkpoint, calls that must fail) take about half the wall time together on CI's 2 cores.
    Their processes get one OpenMP thread each: two processes spinning two OpenMP threads each on 2 cores can run
    many times slower than one after the other. The first call (in the order given) that raised re-raises here.
    """
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # set before any call starts, restored after all have ended
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(call) for call in calls]
    finally:
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before
    return [future.result() for future in futures]


@pytest.fixture
def cli():
    return run_cli

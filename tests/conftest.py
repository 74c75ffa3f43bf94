"""Shared fixtures: a temporary project root for runs, exports and data; seeded, single-threaded torch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Without CUDA the Triton kernels run under Triton's interpreter (the CPU lane of tests/common/attention/kernels).
# Triton reads this when `triton.language` is first imported and when a kernel is decorated, so it is set
# here, before any test module can import either.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    yield


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


@pytest.fixture
def cli():
    return run_cli

"""Build an embedded dataset once, atomically, and reuse it after."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable
from pathlib import Path

DONE_MARKER = ".complete"


def build_once(target: str | Path, build: Callable[[Path], None]) -> Path:
    """Return `target`, first calling `build(tmp_dir)` and renaming it into place if not built yet.

    A build that is killed half-way leaves only a temporary folder behind, never a half-written
    `target`. Concurrent builders (DDP ranks, sweep trials, test workers) take turns on a lock file beside
    `target`: the first builds, the others wait and reuse its build. Where the file system has no locks, they
    all build and race safely: the first rename wins.
    """
    target = Path(target)
    if (target / DONE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(f".{target.name}.lock"), "w") as lock:
        with contextlib.suppress(OSError):  # e.g. a Lustre mount without flock
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / DONE_MARKER).is_file():  # built while this process waited
            return target
        _build(target, build)
    return target


def _build(target: Path, build: Callable[[Path], None]) -> None:
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        build(tmp)
        (tmp / DONE_MARKER).touch()
        if target.exists() and not (target / DONE_MARKER).is_file():
            shutil.rmtree(target)  # leftover of an older, interrupted layout
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

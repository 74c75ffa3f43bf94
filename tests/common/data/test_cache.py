"""`build_once` under concurrent builders: DDP ranks and sweep trials that start together build the data once."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from common.data.cache import DONE_MARKER, build_once


def _build(tmp: Path, log: Path) -> None:
    with open(log, "a") as f:
        f.write("built\n")
    time.sleep(0.5)  # long enough for the other process to arrive while this one builds
    (tmp / "data.txt").write_text("x")


def _builder(target: str, log: str) -> None:
    assert (build_once(target, lambda tmp: _build(tmp, Path(log))) / "data.txt").read_text() == "x"


def test_two_processes_build_once(tmp_path):
    target, log = tmp_path / "data" / "set", tmp_path / "builds.log"
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_builder, args=(str(target), str(log))) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    assert log.read_text() == "built\n"  # the second waited on the lock and reused the first's build
    assert (target / DONE_MARKER).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == [".set.lock", "set"]  # no temporary left


def test_a_built_target_is_not_built_again(tmp_path):
    calls = []
    for _ in range(2):
        build_once(tmp_path / "set", lambda tmp: calls.append(tmp))
    assert len(calls) == 1

"""The DETR apps' slow learning check: one epoch of the default config (250 steps from scratch, seed 42) keeps
most of the validation map_50 that the app's README measured after that epoch of the same run.

The test repeats that epoch, so only numerics move the number: the same seed on other numerics (H200 bf16
against CPU fp32) moved the detection apps' map_50 by 7-9% (both READMEs). 0.6x the measurement leaves four times
that drift and still fails a change that loses 40% of the first epoch's learning."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import run_cli

KEPT = 0.6


def assert_first_epoch_keeps_map_50(app: str, readme_val_map_50: float, root: Path) -> None:
    # ~3 min on 2 quiet cores; 1800 s because a contended CPU ran past run_cli's default 600 s
    run_cli("train", f"app={app}", "max_epochs=1", "trainer=cpu", "test=false", "callbacks.progress_bar=null",
            root=root, timeout=1800)  # fmt: skip
    metrics = json.loads((root / "runs" / app / "latest" / "metrics.json").read_text())
    assert metrics["steps"] == 250
    assert metrics["val"]["map_50"] > KEPT * readme_val_map_50, metrics["val"]

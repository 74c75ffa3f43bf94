"""Results tables across runs: the metrics.json of each run found under some folders, grouped by dataset and arch."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml


def collect_runs(roots: list[Path]) -> dict[str, dict[str, list[dict]]]:
    """dataset -> `model.arch` -> the metrics.json of each run under `roots` (runs without a config.yaml beside
    their metrics.json are skipped)."""
    table: dict[str, dict[str, list[dict]]] = {}
    for root in roots:
        for metrics_file in sorted(Path(root).rglob("metrics.json")):
            config_file = metrics_file.parent / "config.yaml"
            if not config_file.is_file():
                continue
            cfg = yaml.safe_load(config_file.read_text())
            metrics = json.loads(metrics_file.read_text())
            table.setdefault(metrics["dataset"], {}).setdefault(cfg["model"]["arch"], []).append(metrics)
    return table


def mean_std(values: list[float], digits: int) -> str:
    """ "mean" for one run, "mean ± std" for several."""
    mean = statistics.mean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"

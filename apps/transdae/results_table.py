"""Collect transdae runs (metrics.json + config.yaml below folders) into the README's results table: TransDAE and
its baselines side by side, per dataset.

    python -m common.pipeline.train -m app=transdae model.arch=transdae,unet     # both, one command
    python -m apps.transdae.results_table runs/transdae/multirun/<time> [more folders...]

One row per (dataset, architecture): runs (seeds), test Dice (mean over the foreground classes, then each class),
test HD95 (mm), the best val Dice (the checkpoint selection metric), epochs and training time. Several seeds are
shown as mean ± sample std; the best mean test Dice of a dataset is bold.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import yaml


def collect(roots: list[Path]) -> dict[str, dict[str, list[dict]]]:
    """dataset -> arch -> metrics.json of each run (with the run's config.yaml beside it)."""
    table: dict[str, dict[str, list[dict]]] = {}
    for root in roots:
        for metrics_file in sorted(root.rglob("metrics.json")):
            config_file = metrics_file.parent / "config.yaml"
            if not config_file.is_file():
                continue
            cfg = yaml.safe_load(config_file.read_text())
            metrics = json.loads(metrics_file.read_text())
            table.setdefault(metrics["dataset"], {}).setdefault(cfg["model"]["arch"], []).append(metrics)
    return table


def _stat(values: list[float], digits: int) -> str:
    mean = statistics.mean(values)
    return f"{mean:.{digits}f}" if len(values) == 1 else f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def render(table: dict[str, dict[str, list[dict]]]) -> str:
    lines = []
    for dataset, runs in table.items():
        classes = sorted(k[5:] for k in next(iter(runs.values()))[0]["test"] if k.startswith("dice_"))
        header = ["dataset", "model", "runs", "test Dice", *classes, "test HD95", "best val Dice", "epochs", "train s"]
        lines += ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
        best = max(statistics.mean(r["test"]["dice"] for r in rs) for rs in runs.values())
        for arch, rs in sorted(runs.items(), key=lambda item: item[0] != "transdae"):
            dice = _stat([r["test"]["dice"] for r in rs], 4)
            if statistics.mean(r["test"]["dice"] for r in rs) == best:
                dice = f"**{dice}**"
            cells = [
                dataset, arch, str(len(rs)), dice,
                *(_stat([r["test"][f"dice_{c}"] for r in rs], 4) for c in classes),
                _stat([r["test"]["hd95"] for r in rs], 2),
                _stat([r["monitor"]["best"] for r in rs], 4),
                _stat([r["epochs"] for r in rs], 0),
                _stat([r["train_seconds"] for r in rs], 0),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    roots = [Path(a) for a in argv]
    if not roots or not all(r.is_dir() for r in roots):
        sys.exit("usage: python -m apps.transdae.results_table RUN_FOLDER [RUN_FOLDER ...]")
    print(render(collect(roots)))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Collect transdae runs (metrics.json + config.yaml below folders) into the README's results table: TransDAE and
its baselines side by side, per dataset.

    python -m common.pipeline.train -m app=transdae model.arch=transdae,unet     # both, one command
    python -m apps.transdae.results_table runs/transdae/multirun/<time> [more folders...]

One row per (dataset, architecture): runs (seeds), test Dice (mean over the foreground classes, then each class),
test HD95 (mm), the best val Dice (the checkpoint selection metric), epochs and training time. Several seeds are
shown as mean ± sample std; the best mean test Dice of a dataset is bold.
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from common.utils.results import collect_runs, mean_std


def render(table: dict[str, dict[str, list[dict]]]) -> str:
    lines = []
    for dataset, runs in table.items():
        classes = sorted(k[5:] for k in next(iter(runs.values()))[0]["test"] if k.startswith("dice_"))
        header = ["dataset", "model", "runs", "test Dice", *classes, "test HD95", "best val Dice", "epochs", "train s"]
        lines += ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
        best = max(statistics.mean(r["test"]["dice"] for r in rs) for rs in runs.values())
        for arch, rs in sorted(runs.items(), key=lambda item: item[0] != "transdae"):
            dice = mean_std([r["test"]["dice"] for r in rs], 4)
            if statistics.mean(r["test"]["dice"] for r in rs) == best:
                dice = f"**{dice}**"
            cells = [
                dataset, arch, str(len(rs)), dice,
                *(mean_std([r["test"][f"dice_{c}"] for r in rs], 4) for c in classes),
                mean_std([r["test"]["hd95"] for r in rs], 2),
                mean_std([r["monitor"]["best"] for r in rs], 4),
                mean_std([r["epochs"] for r in rs], 0),
                mean_std([r["train_seconds"] for r in rs], 0),
            ]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    roots = [Path(a) for a in argv]
    if not roots or not all(r.is_dir() for r in roots):
        sys.exit("usage: python -m apps.transdae.results_table RUN_FOLDER [RUN_FOLDER ...]")
    print(render(collect_runs(roots)))


if __name__ == "__main__":
    main(sys.argv[1:])

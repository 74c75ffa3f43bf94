"""Mean and standard deviation of metrics over runs (seeds), as a markdown table.

    python -m common.pipeline.summarize runs/scgc/multirun/<time>      # every metrics.json below it
    python -m common.pipeline.summarize DIR --split test --by data.dataset model.variant

Runs are grouped by the config keys given with --by (read from each run's config.yaml).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import yaml
from omegaconf import OmegaConf


def collect(root: Path, split: str, by: list[str]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for metrics_file in sorted(root.rglob("metrics.json")):
        config_file = metrics_file.parent / "config.yaml"
        if not config_file.is_file():
            continue  # eval folders and the like
        cfg = OmegaConf.create(yaml.safe_load(config_file.read_text()))
        key = tuple(OmegaConf.select(cfg, k) for k in by)
        groups[key].append(json.loads(metrics_file.read_text()).get(split, {}))
    return groups


def table(groups: dict[tuple, list[dict]], by: list[str], metrics: list[str] | None = None) -> str:
    names = metrics or sorted({m for runs in groups.values() for r in runs for m in r})
    lines = ["| " + " | ".join([*by, "runs", *names]) + " |", "|" + " --- |" * (len(by) + 1 + len(names))]
    for key, runs in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        cells = []
        for name in names:
            values = [r[name] for r in runs if name in r]
            if not values:
                cells.append("")
                continue
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {std:.4f}")
        lines.append("| " + " | ".join([*map(str, key), str(len(runs)), *cells]) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--split", default="test", choices=["val", "test"])
    parser.add_argument("--by", nargs="*", default=["data.dataset", "model.variant"])
    parser.add_argument("--metrics", nargs="*", default=None)
    args = parser.parse_args(argv)
    if not args.root.is_dir():
        sys.exit(f"error: {args.root} is not a folder")
    groups = collect(args.root, args.split, args.by)
    if not groups:
        sys.exit(f"error: no run with metrics.json and config.yaml under {args.root}")
    print(table(groups, args.by, args.metrics))


if __name__ == "__main__":
    main(sys.argv[1:])

"""The protocol table in one command: RISurConv and the PointNet baseline, each trained with up-axis rotations
(z) and with SO(3) rotations, every run tested under both; prints and writes z/z, z/SO3 and SO3/SO3.

python -m apps.risurconv.protocols                      # the defaults (4 trainings, one after the other)
python -m apps.risurconv.protocols max_epochs=5 seed=1  # any train overrides, given to every run

The four runs are one Hydra multirun under runs/risurconv/protocols/<time>/ (job folders 0-3, each a normal run
folder); the table goes to protocols.md and protocols.json beside them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from common.utils.files import write_json, write_text

ARCHS, ROTATIONS = ("pointnet", "risurconv"), ("z", "so3")  # the cheap baseline first


def table(runs_dir: Path) -> tuple[dict, str]:
    """{arch: {protocol: value}} and its markdown, from the job folders' config.yaml and metrics.json."""
    rows: dict[str, dict] = {}
    metric = "acc"
    for job in sorted(p for p in runs_dir.iterdir() if (p / "metrics.json").is_file()):
        config = yaml.safe_load((job / "config.yaml").read_text())
        test = json.loads((job / "metrics.json").read_text())["test"]
        metric = "miou" if config["data"]["task"] == "partseg" else "acc"
        row = rows.setdefault(config["model"]["arch"], {})
        if config["data"]["train_rotation"] == "z":
            row["z/z"], row["z/SO3"] = test[f"{metric}_z"], test[f"{metric}_so3"]
        else:
            row["SO3/SO3"] = test[f"{metric}_so3"]
    cols = ["z/z", "z/SO3", "SO3/SO3"]
    lines = [f"| model ({metric}) | " + " | ".join(cols) + " | z/z - z/SO3 |", "|---" * 5 + "|"]
    for arch, row in rows.items():
        cells = [f"{row[c]:.4f}" if c in row else "-" for c in cols]
        drop = f"{row['z/z'] - row['z/SO3']:+.4f}" if {"z/z", "z/SO3"} <= set(row) else "-"
        lines.append(f"| {arch} | " + " | ".join(cells) + f" | {drop} |")
    return rows, "\n".join(lines) + "\n"


def main(overrides: list[str]) -> Path:
    root = Path(os.environ.get("MANYHEADS_ROOT", Path.cwd()))
    out = root / "runs" / "risurconv" / "protocols" / time.strftime("%Y-%m-%d_%H-%M-%S")
    command = [
        sys.executable, "-m", "common.pipeline.train", "-m", "app=risurconv",
        f"model.arch={','.join(ARCHS)}", f"data.train_rotation={','.join(ROTATIONS)}",
        f"hydra.sweep.dir={out}", *overrides,
    ]  # fmt: skip
    subprocess.run(command, check=True)
    rows, markdown = table(out)
    write_json(out / "protocols.json", {"overrides": overrides, "table": rows})
    write_text(out / "protocols.md", markdown)
    print(f"\n{markdown}\nwritten: {out / 'protocols.md'}")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])

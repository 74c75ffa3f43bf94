"""Convergence plot: a metric against training steps for several runs, read from their CSV logs.

Relation-DETR's claim is faster convergence; train the default and the ablation for the same steps, then

    python -m apps.relation_detr.convergence runs/relation_detr/<with> runs/relation_detr/<without> \
        --labels "with relation" "without relation" --out apps/relation_detr/convergence.png

draws val/map_50 against the optimiser step for each run and prints the table behind it (markdown).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.utils.figures import save_figure


def metric_by_step(run_dir: Path, metric: str = "val/map_50") -> pd.Series:
    """The metric's logged values indexed by global step, from <run>/logs/csv/metrics.csv."""
    csv = Path(run_dir) / "logs" / "csv" / "metrics.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"no CSV log at {csv} (is {run_dir} a run folder?)")
    log = pd.read_csv(csv)
    if metric not in log:
        raise KeyError(f"{csv} has no column {metric!r}; columns: {list(log.columns)}")
    return log[["step", metric]].dropna().groupby("step")[metric].last()


def convergence_table(series: dict[str, pd.Series]) -> str:
    """Markdown table: one row per step, one column per run."""
    frame = pd.DataFrame(series)
    lines = ["| step | " + " | ".join(frame.columns) + " |", "|---" * (len(frame.columns) + 1) + "|"]
    for step, row in frame.iterrows():
        cells = ["" if pd.isna(v) else f"{v:.3f}" for v in row]
        lines.append(f"| {int(step)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_convergence(series: dict[str, pd.Series], out_png: Path, metric: str = "val/map_50") -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, values in series.items():
        ax.plot(values.index, values.values, marker="o", label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out_png)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="run folders (runs/relation_detr/<time>)")
    parser.add_argument("--labels", nargs="+", help="one label per run (default: the folder names)")
    parser.add_argument("--metric", default="val/map_50")
    parser.add_argument("--out", type=Path, default=Path("apps/relation_detr/convergence.png"))
    args = parser.parse_args(argv)
    labels = args.labels or [r.name for r in args.runs]
    if len(labels) != len(args.runs):
        parser.error("give one label per run")
    series = {label: metric_by_step(run, args.metric) for label, run in zip(labels, args.runs)}
    print(convergence_table(series))
    print(f"plot: {plot_convergence(series, args.out, args.metric)}")


if __name__ == "__main__":
    main()

"""Learning curves of a run, drawn from Lightning's CSV log."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from common.utils.figures import save_figure


def plot_learning_curves(metrics_csv: Path, out_png: Path) -> Path | None:
    """One panel per logged metric (train/*, val/*), against epoch. Returns the PNG path, or None if no log."""
    if not metrics_csv.is_file():
        return None
    log = pd.read_csv(metrics_csv)
    if "epoch" not in log:
        return None
    names = sorted(c for c in log.columns if c.split("/")[0] in ("train", "val") and log[c].notna().any())
    names = [n for n in names if not n.endswith("_step")]
    if not names:
        return None
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        series = log[["epoch", name]].dropna().groupby("epoch")[name].mean()
        ax.plot(series.index, series.values, marker="." if len(series) < 50 else None)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    return save_figure(fig, out_png, dpi=100)

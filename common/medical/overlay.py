"""Pictures of segmentations: label maps drawn over an image slice, and per-class scores as bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap

from common.utils.figures import save_figure

COLOURS = plt.get_cmap("tab10").colors + plt.get_cmap("tab20b").colors


def label_colours(num_classes: int) -> ListedColormap:
    """Transparent background (0), then one colour per class."""
    colours = [(0, 0, 0, 0)] + [(*COLOURS[(i - 1) % len(COLOURS)], 0.45) for i in range(1, num_classes)]
    return ListedColormap(colours)


def overlay_rows(rows: list[dict], class_names: list[str], path: str | Path, title: str = "") -> Path:
    """One row per slice: the image, then each label map of the row (`{"image": [H, W], "<name>": [H, W], ...}`,
    e.g. ground truth and prediction) drawn over it, with a shared class legend."""
    columns = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.6 * columns, 2.6 * len(rows)), squeeze=False)
    cmap = label_colours(len(class_names))
    for row, ax_row in zip(rows, axes):
        image = np.asarray(row["image"], np.float32)
        for ax, (name, value) in zip(ax_row, row.items()):
            ax.imshow(image.T, cmap="gray", origin="lower")
            if name != "image":
                ax.imshow(np.asarray(value).T, cmap=cmap, vmin=0, vmax=len(class_names) - 1, origin="lower",
                          interpolation="nearest")  # fmt: skip
            ax.set_title(name, fontsize=8)
            ax.axis("off")
        for ax in ax_row[len(row) :]:
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=cmap(i)[:3]) for i in range(1, len(class_names))]
    fig.legend(handles, class_names[1:], loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(bottom=0.08)
    return save_figure(fig, path)


def class_bars(scores: dict[str, dict[str, float]], path: str | Path, metric: str = "Dice") -> Path:
    """Grouped bars: {series (e.g. a model): {class: score}}."""
    series = list(scores)
    classes = list(next(iter(scores.values())))
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(classes) * max(1, len(series))), 3.4))
    width = 0.8 / len(series)
    for k, name in enumerate(series):
        values = [scores[name][c] for c in classes]
        bars = ax.bar(np.arange(len(classes)) + k * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)

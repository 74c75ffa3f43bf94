"""3-D scatter pictures of point clouds (matplotlib, headless)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from common.utils.figures import save_figure


def scatter(ax, xyz: np.ndarray, values: np.ndarray | None = None, title: str = "", cmap: str = "viridis") -> None:
    """One cloud on a 3-D axis, coloured by `values` (default: height), equal aspect, no ticks."""
    colours = xyz[:, 2] if values is None else values
    ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=colours, s=2, cmap=cmap, depthshade=False)
    ax.set_box_aspect(np.ptp(xyz, axis=0) + 1e-6)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
    ax.set_title(title, fontsize=8)


def cloud_grid(clouds: list[np.ndarray], titles: list[str], path: str | Path, values=None, cmap="viridis") -> Path:
    """Clouds side by side in a grid of up to 4 columns, written to `path`."""
    cols = min(4, len(clouds))
    rows = -(-len(clouds) // cols)
    fig = plt.figure(figsize=(3 * cols, 3 * rows))
    for i, (xyz, title) in enumerate(zip(clouds, titles)):
        scatter(fig.add_subplot(rows, cols, i + 1, projection="3d"), xyz, None if values is None else values[i],
                title, cmap)  # fmt: skip
    return save_figure(fig, path)

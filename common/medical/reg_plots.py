"""The registration picture: fixed, moving, warped, |fixed - moving|, |fixed - warped|, the warped grid and the
Jacobian determinant, on the middle slice of each axis (the nestedmorph helper's own plot file; a shared medical
plot helper, if one appears, can take it over)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.utils.figures import plt, save_figure

GRID_STEP = 4  # voxels between drawn grid lines


def _slice(volume: np.ndarray, axis: int) -> np.ndarray:
    return np.take(volume, volume.shape[axis] // 2, axis=axis).T  # rows: the later axis, drawn bottom-up


def _grid(ax, ddf: np.ndarray, axis: int) -> None:
    """Lines of the regular grid carried by the displacement (in-plane components) on the middle slice."""
    a, b = [i for i in range(3) if i != axis]
    u = [_slice(ddf[i], axis) for i in (a, b)]  # [rows=b, cols=a]
    rows, cols = np.mgrid[0 : u[0].shape[0], 0 : u[0].shape[1]]
    x, y = cols + u[0], rows + u[1]
    for r in range(0, x.shape[0], GRID_STEP):
        ax.plot(x[r], y[r], lw=0.5, color="k")
    for c in range(0, x.shape[1], GRID_STEP):
        ax.plot(x[:, c], y[:, c], lw=0.5, color="k")
    ax.set_xlim(0, x.shape[1] - 1)
    ax.set_ylim(0, x.shape[0] - 1)
    ax.set_aspect("equal")


def plot_registration(fixed, moving, warped, ddf, det, path: str | Path, title: str = "") -> Path:
    """fixed, moving, warped, det: [S, S, S]; ddf: [3, S, S, S] (voxels). One row per axis."""
    columns = ("fixed", "moving", "warped", "|fixed - moving|", "|fixed - warped|", "warped grid", "Jacobian det")
    fig, axes = plt.subplots(3, len(columns), figsize=(2.2 * len(columns), 6.8))
    diff_max = float(max(np.abs(fixed - moving).max(), 1e-6))
    for axis in range(3):
        row = axes[axis]
        for ax, image in zip(row[:3], (fixed, moving, warped)):
            ax.imshow(_slice(image, axis), cmap="gray", origin="lower", vmin=0, vmax=1)
        for ax, image in zip(row[3:5], (np.abs(fixed - moving), np.abs(fixed - warped))):
            ax.imshow(_slice(image, axis), cmap="magma", origin="lower", vmin=0, vmax=diff_max)
        _grid(row[5], ddf, axis)
        shown = row[6].imshow(_slice(det, axis), cmap="RdBu", origin="lower", vmin=0, vmax=2)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, name in zip(axes[0], columns):
        ax.set_title(name, fontsize=9)
    fig.colorbar(shown, ax=axes[:, 6].tolist(), fraction=0.05, label="det (<= 0: folded)")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)

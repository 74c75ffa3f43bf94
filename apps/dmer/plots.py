"""Emotion curves: predictions against the consensus on test pieces, and a prediction over its spectrogram."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.utils.figures import plt, save_figure
from common.utils.modes import eval_mode

COLORS = {"arousal": "tab:red", "valence": "tab:blue"}


def plot_test_curves(model, datamodule, path: Path, device, pieces: int = 4) -> Path:
    """Predicted (solid) and consensus (dashed) arousal and valence of the first test pieces."""
    indices = datamodule.corpus.indices("test")[:pieces]
    windows, clip, target = datamodule.pieces.batch([(i, datamodule.corpus.consensus[i]) for i in indices])
    with eval_mode(model):
        pred = model(windows.to(device), clip.to(device)).float().cpu().numpy()
    fig, axes = plt.subplots(len(indices), 1, figsize=(8, 2.2 * len(indices)), sharex=True, squeeze=False)
    for ax, i, p, t in zip(axes[:, 0], indices, pred, target.numpy()):
        times = datamodule.corpus.times[i]
        for d, name in enumerate(COLORS):
            ax.plot(times, p[:, d], color=COLORS[name], label=f"{name} (predicted)")
            ax.plot(times, t[:, d], color=COLORS[name], linestyle="--", label=f"{name} (consensus)")
        ax.set_ylim(-1, 1)
        ax.set_ylabel(datamodule.corpus.ids[i])
    axes[0, 0].legend(fontsize=7, ncol=2, loc="lower right")
    axes[-1, 0].set_xlabel("time (s)")
    fig.suptitle("test pieces: predicted vs consensus emotion")
    return save_figure(fig, path)


def plot_prediction(mel: np.ndarray, hop: float, times: np.ndarray, curves: np.ndarray, path: Path, title: str) -> Path:
    """The arousal and valence curves [T, 2] over the log-mel spectrogram [frames, n_mels] of the input."""
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.imshow(mel.T, origin="lower", aspect="auto", cmap="magma", extent=(0, len(mel) * hop, 0, mel.shape[1]))
    ax.set_ylabel("mel band")
    ax.set_xlabel("time (s)")
    curve_ax = ax.twinx()
    for d, name in enumerate(COLORS):
        curve_ax.plot(times, curves[:, d], color="white", linewidth=3.5)
        curve_ax.plot(times, curves[:, d], color=COLORS[name], linewidth=2, label=name)
    curve_ax.set_ylim(-1, 1)
    curve_ax.axhline(0, color="white", linewidth=0.5, alpha=0.5)
    curve_ax.set_ylabel("emotion")
    curve_ax.legend(loc="upper right")
    ax.set_title(title)
    return save_figure(fig, path)

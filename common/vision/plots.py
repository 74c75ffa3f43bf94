"""Pictures shared by the vision apps: a grid of test predictions, and one image with its top-5 bars."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from common.utils.figures import save_figure
from common.utils.modes import eval_mode
from common.vision.transforms import MEAN, STD


def to_display(image: torch.Tensor) -> np.ndarray:
    """Normalised [C, H, W] -> [H, W] (grey) or [H, W, 3] in [0, 1] for imshow."""
    x = (image.detach().cpu().float() * STD + MEAN).clamp(0, 1)
    return x[0].numpy() if x.shape[0] == 1 else x.permute(1, 2, 0).numpy()


@torch.no_grad()
def prediction_grid(model, datamodule, path: Path, n: int = 16) -> Path:
    """The first `n` test images with predicted (and true) class; wrong ones in red."""
    datamodule.setup("test")
    test = datamodule.splits["test"]
    items = [test[i] for i in range(min(n, len(test)))]
    images = torch.stack([x for x, _ in items])
    device = next(model.parameters()).device
    with eval_mode(model):
        pred = model(images.to(device)).argmax(-1).cpu()
    names = datamodule.class_names
    cols = 4
    rows = (len(items) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (image, label), p in zip(axes.flat, items, pred.tolist()):
        ax.imshow(to_display(image), cmap="gray")
        ax.set_title(f"{names[p]}\n(true {names[int(label)]})", fontsize=7, color="k" if p == int(label) else "r")
    for ax in axes.flat:
        ax.axis("off")
    return save_figure(fig, path, dpi=100)


def topk_figure(image: torch.Tensor, names: list[str], probs: list[float], title: str, path: Path) -> Path:
    """The input image beside a horizontal bar chart of its top-k class probabilities."""
    fig, (ax_img, ax_bar) = plt.subplots(1, 2, figsize=(8, 3.2), gridspec_kw={"width_ratios": [1, 1.4]})
    ax_img.imshow(to_display(image), cmap="gray")
    ax_img.axis("off")
    ax_img.set_title(title, fontsize=8)
    y = np.arange(len(names))[::-1]
    ax_bar.barh(y, probs, color="tab:blue")
    ax_bar.set_yticks(y, names, fontsize=8)
    ax_bar.set_xlim(0, 1)
    ax_bar.set_xlabel("probability")
    for yi, p in zip(y, probs):
        ax_bar.text(min(p + 0.02, 0.85), yi, f"{p:.3f}", va="center", fontsize=8)
    return save_figure(fig, path)

"""BiFormer's own picture: for one test image, the regions each query region routes to."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.patches import Rectangle

from apps.biformer.routing import last_block_routes
from common.utils.figures import save_figure
from common.vision.plots import to_display


def routing_figure(net, image, title: str, path: Path, stage: int | None = None) -> Path | None:
    """One panel per query region of a routing stage's last block (default: the last routing stage): the
    query region in red, the regions it routes to shaded in blue (boxes in input pixels, map padding included).

    Args: net: a BiFormer; image: [C, H, W] normalised; stage: 0-based stage index or None.
    """
    stages = last_block_routes(net, image[None])
    if not stages or (stage is not None and stage not in stages):
        return None
    stage = max(stages) if stage is None else stage
    info = stages[stage]
    n_win, routes = info["n_win"], info["routes"].tolist()
    map_h, map_w = info["map"]
    img_h, img_w = image.shape[-2:]
    # a region covers ceil(map / n_win) map cells; one map cell covers img / map input pixels
    cell_h, cell_w = img_h / map_h * -(-map_h // n_win), img_w / map_w * -(-map_w // n_win)
    n = n_win * n_win
    cols = min(n, 8)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows + 0.5), squeeze=False)
    picture = to_display(image)
    for q, ax in enumerate(axes.flat):
        ax.axis("off")
        if q >= n:
            continue
        ax.imshow(picture, cmap="gray", extent=(0, img_w, img_h, 0))
        for r in routes[q]:
            y, x = divmod(r, n_win)
            ax.add_patch(Rectangle((x * cell_w, y * cell_h), cell_w, cell_h, color="tab:blue", alpha=0.45))
        y, x = divmod(q, n_win)
        ax.add_patch(Rectangle((x * cell_w, y * cell_h), cell_w, cell_h, fill=False, ec="red", lw=2))
        ax.set_xlim(0, max(img_w, cell_w * n_win))
        ax.set_ylim(max(img_h, cell_h * n_win), 0)
        ax.set_title(f"query {q}", fontsize=7)
    fig.suptitle(f"{title}\nstage {stage + 1}: {n_win}x{n_win} regions, top-{len(routes[0])} routed (blue)", fontsize=8)
    return save_figure(fig, path)

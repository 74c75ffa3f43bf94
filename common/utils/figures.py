"""Figures: the headless Agg backend, set here once for every importer, and the one way every plot is written."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # runs, tests and exports have no display; pyplot resolves its backend at the first figure
import matplotlib.pyplot as plt  # noqa: E402


def save_figure(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out `fig`, write it to `path` (creating its folder) and close it; returns the path."""
    path = Path(path)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

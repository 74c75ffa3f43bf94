"""Forecast against truth on the test period."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from common.utils.figures import save_figure


def _draw(ax, times, truth, forecasts: dict, history, title: str, ylabel: str) -> None:
    if history is not None:
        ax.plot(history[0], history[1], color="0.6", lw=1, label="history")
    if truth is not None:
        ax.plot(times, np.asarray(truth).reshape(-1), color="black", lw=1.2, label="truth")
    for name, values in forecasts.items():
        values = np.asarray(values).reshape(-1)
        sparse = np.isfinite(values).sum() < 3  # a lone point (e.g. the next step) needs a marker to show
        ax.plot(times, values, lw=1, marker="o" if sparse else None, label=name)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")


def plot_forecast(
    times,
    truth,
    forecasts: dict[str, np.ndarray],
    out_png: Path,
    *,
    title: str = "test period",
    ylabel: str = "close",
    history: tuple | None = None,
    zoom: int | None = None,
) -> Path:
    """Truth as a line and each forecast (name -> values aligned with `times`) as another; `history`
    = (times, values) draws observed values before the forecast in grey; `zoom` = n adds a second panel
    with the last n steps only (one-step forecasts of a long period overlap at full scale). Returns `out_png`."""
    zoomed = zoom is not None and len(times) > zoom
    fig, axes = plt.subplots(2 if zoomed else 1, 1, figsize=(10, 7 if zoomed else 4), squeeze=False)
    _draw(axes[0, 0], times, truth, forecasts, history, title, ylabel)
    if zoomed:
        tail = slice(len(times) - zoom, len(times))
        part = {k: np.asarray(v).reshape(-1)[tail] for k, v in forecasts.items()}
        truth_part = None if truth is None else np.asarray(truth).reshape(-1)[tail]
        _draw(axes[1, 0], times[tail], truth_part, part, None, f"last {zoom} steps", ylabel)
    fig.autofmt_xdate()
    return save_figure(fig, out_png, dpi=100)

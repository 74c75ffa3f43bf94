"""Stockformer's pictures: backtest equity curves and predicted vs realised returns (and predict's bar chart)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from common.utils.figures import save_figure

LABELS = {
    "model": "Stockformer top-{k}",
    "equal_weight": "equal weight, buy and hold",
    "momentum": "12-1 momentum top-{k}",
}


def plot_equity_curves(results: dict, dates, top_k: int, cost_bps: float, path: Path) -> Path:
    """Equity (start 1.0) of each strategy over the days of the split; the legend holds each Sharpe."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for name, result in results.items():
        summary = result.summary()
        label = LABELS.get(name, name).format(k=top_k) + f" (Sharpe {summary['sharpe']:.2f})"
        ax.plot(dates, result.equity[1:], label=label, lw=1.4 if name == "model" else 1.0)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_ylabel("equity (start = 1)")
    ax.set_title(f"test-period backtest, {cost_bps:g} bps per unit turnover")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return save_figure(fig, path)


def plot_predicted_vs_realised(pred: np.ndarray, target: np.ndarray, path: Path, max_points: int = 20000) -> Path:
    """Scatter of predicted vs realised T2-day returns (every stock and date of the split)."""
    x = pred.sum(axis=1).reshape(-1)
    y = (np.prod(1.0 + target, axis=1) - 1.0).reshape(-1)
    if len(x) > max_points:
        keep = np.random.default_rng(0).choice(len(x), max_points, replace=False)
        x, y = x[keep], y[keep]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.scatter(x, y, s=3, alpha=0.3)
    corr = np.corrcoef(x, y)[0, 1] if np.std(x) > 0 and np.std(y) > 0 else float("nan")
    ax.set_xlabel("predicted return over the horizon")
    ax.set_ylabel("realised return over the horizon")
    ax.set_title(f"test: predicted vs realised (pooled Pearson r = {corr:.3f})", fontsize=9)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_prediction_bars(tickers: list[str], returns: np.ndarray, up_prob: np.ndarray, picks: set, path: Path) -> Path:
    """Bars of the predicted next-horizon return per ticker, the top-k picks highlighted."""
    order = np.argsort(-returns)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(tickers)), 4))
    colours = ["tab:green" if tickers[i] in picks else "tab:grey" for i in order]
    ax.bar([tickers[i] for i in order], returns[order] * 100, color=colours)
    for j, i in enumerate(order):
        ax.text(j, returns[i] * 100, f"{up_prob[i]:.2f}", ha="center", va="bottom", fontsize=6)
    ax.set_ylabel("predicted return (%)")
    ax.set_title("next-period prediction (green: top-k pick; labels: probability of an up move)", fontsize=9)
    ax.tick_params(axis="x", rotation=90, labelsize=7)
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, path)

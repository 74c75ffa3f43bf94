"""The model's stock-selection metrics and backtests, with the two baselines on the same days.

Inputs are one split's samples in date order (consecutive window ends t, t+1, ...): predicted daily returns
`pred [S, T2, N]`, realised daily returns `target [S, T2, N]`, the 12-1 momentum score `momentum [S, N]`.

- IC / RankIC: per sample date, cross-sectional correlation of the predicted T2-day return (sum of the
  predicted daily returns) with the realised T2-day return (compounded), averaged over dates.
- Backtests rebalance every T2 days (samples 0, T2, 2*T2, ...): each such sample's T2 target days are the
  holding period, so the blocks tile the split's days without overlap. Strategies, all long-only on the
  same days with the same cost per unit turnover:
    model: top-k by predicted T2-day return (with `n_drop`: Qlib's TopK-Dropout, the paper's backtest);
    momentum: top-k by 12-1 momentum (the classic ranking: return from 12 months ago to 1 month ago), with
    the same k and n_drop; equal_weight: 1/N bought on day one and held.
"""

from __future__ import annotations

import numpy as np

from common.timeseries.selection import (
    TRADING_DAYS,
    BacktestResult,
    backtest,
    ic,
    rank_ic,
    top_k_dropout_weights,
    top_k_weights,
)


def holding_blocks(pred: np.ndarray, target: np.ndarray, momentum: np.ndarray) -> dict:
    """Scores and daily returns of the rebalance samples, flattened to days."""
    horizon = target.shape[1]
    starts = np.arange(0, len(target), horizon)
    days = target[starts].reshape(-1, target.shape[2])  # [blocks * T2, N]
    return {
        "starts": starts,
        "returns": days,
        "model_scores": pred[starts].sum(axis=1),
        "momentum_scores": momentum[starts],
    }


def _scheduled(scores: np.ndarray, horizon: int, top_k: int, n_drop: int | None) -> np.ndarray:
    weights = np.full((len(scores) * horizon, scores.shape[1]), np.nan)
    picks = top_k_weights(scores, top_k) if n_drop is None else top_k_dropout_weights(scores, top_k, n_drop)
    weights[::horizon] = picks
    return weights


def strategy_backtests(
    pred: np.ndarray, target: np.ndarray, momentum: np.ndarray, top_k: int, cost_bps: float, n_drop: int | None = None
) -> dict[str, BacktestResult]:
    horizon, n = target.shape[1], target.shape[2]
    blocks = holding_blocks(pred, target, momentum)
    equal = np.full_like(blocks["returns"], np.nan)
    equal[0] = 1.0 / n
    days = blocks["returns"]
    return {
        "model": backtest(_scheduled(blocks["model_scores"], horizon, top_k, n_drop), days, cost_bps),
        "momentum": backtest(_scheduled(blocks["momentum_scores"], horizon, top_k, n_drop), days, cost_bps),
        "equal_weight": backtest(equal, blocks["returns"], cost_bps),
    }


def selection_metrics(
    pred: np.ndarray, target: np.ndarray, momentum: np.ndarray, top_k: int, cost_bps: float, n_drop: int | None = None
) -> dict:
    """IC/RankIC of the model and of the momentum score, and each strategy's ann_return/sharpe/max_drawdown.

    The model's numbers carry plain names (`sharpe`); the baselines' a suffix (`sharpe_equal_weight`).
    """
    realised = np.prod(1.0 + target, axis=1) - 1.0
    score = pred.sum(axis=1)
    out = {
        "ic": ic(score, realised),
        "rank_ic": rank_ic(score, realised),
        "ic_momentum": ic(momentum, realised),
        "rank_ic_momentum": rank_ic(momentum, realised),
    }
    for name, result in strategy_backtests(pred, target, momentum, top_k, cost_bps, n_drop).items():
        suffix = "" if name == "model" else f"_{name}"
        for key, value in result.summary(TRADING_DAYS).items():
            out[f"{key}{suffix}"] = value
    return out

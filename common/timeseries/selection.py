"""Stock-selection metrics and a top-k long-only backtest with transaction costs.

- `ic` / `rank_ic`: per date, the cross-sectional Pearson / Spearman correlation between predicted and
  realised returns (scipy.stats), averaged over dates. Dates where either side is constant are skipped
  (the correlation is undefined there).
- `backtest`: daily portfolio returns from target weights set on rebalance days. Between rebalances the
  weights drift with the assets' returns (a held portfolio, not a daily re-weighted one). On a rebalance
  day the turnover is sum_i |w_target_i - w_drifted_i| (1.0 on the first day: buying in from cash) and
  the day's net return is `gross - turnover * cost_bps / 1e4`, exactly.
- `ann_return` (geometric), `sharpe` (mean / std of daily net returns * sqrt(252), no risk-free rate),
  `max_drawdown` (the deepest fall of the equity curve from its running peak, a positive fraction).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

TRADING_DAYS = 252


def _per_date_corr(pred: np.ndarray, real: np.ndarray, corr) -> float:
    pred, real = np.asarray(pred, dtype=np.float64), np.asarray(real, dtype=np.float64)
    if pred.shape != real.shape or pred.ndim != 2:
        raise ValueError(f"pred and real must both be [dates, assets]; got {pred.shape} and {real.shape}")
    values = []
    for p, r in zip(pred, real):
        ok = np.isfinite(p) & np.isfinite(r)
        p, r = p[ok], r[ok]
        if len(p) < 2 or np.ptp(p) == 0 or np.ptp(r) == 0:
            continue
        values.append(corr(p, r)[0])
    return float(np.mean(values)) if values else float("nan")


def ic(pred: np.ndarray, real: np.ndarray) -> float:
    """Mean over dates of the cross-sectional Pearson correlation; pred, real: [dates, assets]."""
    return _per_date_corr(pred, real, stats.pearsonr)


def rank_ic(pred: np.ndarray, real: np.ndarray) -> float:
    """Mean over dates of the cross-sectional Spearman correlation; pred, real: [dates, assets]."""
    return _per_date_corr(pred, real, stats.spearmanr)


def top_k_weights(scores: np.ndarray, k: int) -> np.ndarray:
    """Equal weights 1/k on the k highest scores of each row (ties: the lower index), zeros elsewhere."""
    scores = np.asarray(scores, dtype=np.float64)
    if not 1 <= k <= scores.shape[-1]:
        raise ValueError(f"top_k={k} must be in [1, {scores.shape[-1]}] (the number of assets)")
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), axis=-1, kind="stable")[..., :k]
    weights = np.zeros_like(scores)
    np.put_along_axis(weights, order, 1.0 / k, axis=-1)
    return weights


def top_k_dropout_weights(scores: np.ndarray, k: int, n_drop: int) -> np.ndarray:
    """Qlib's TopK-Dropout (the paper's backtest): hold k assets; at each row sell at most `n_drop` held assets
    that fell out of the top k (the lowest scored first) and buy the best-scored assets not held in their
    place. Equal weights 1/k on the held set. Fewer trades than re-buying the top k each time."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    weights = top_k_weights(scores[:1], k)
    held = set(np.flatnonzero(weights[0]).tolist())
    rows = [weights[0]]
    for row in scores[1:]:
        order = np.argsort(-row, kind="stable")
        top = set(order[:k].tolist())
        fallen = sorted((i for i in held if i not in top), key=lambda i: row[i])[:n_drop]
        buy = [i for i in order if i not in held][: len(fallen)]
        held = (held - set(fallen)) | set(buy)
        w = np.zeros_like(row)
        w[sorted(held)] = 1.0 / k
        rows.append(w)
    return np.stack(rows)


@dataclass
class BacktestResult:
    returns: np.ndarray  # [days] net daily returns
    gross: np.ndarray  # [days] before costs
    turnover: np.ndarray  # [days] traded fraction of the portfolio (0 on days without a rebalance)
    equity: np.ndarray  # [days + 1] starting at 1.0

    def summary(self, periods_per_year: int = TRADING_DAYS) -> dict:
        return {
            "ann_return": ann_return(self.returns, periods_per_year),
            "sharpe": sharpe(self.returns, periods_per_year),
            "max_drawdown": max_drawdown(self.equity),
            "turnover": float(self.turnover.sum() / max(len(self.returns), 1) * periods_per_year),
        }


def backtest(target_weights: np.ndarray, returns: np.ndarray, cost_bps: float = 0.0) -> BacktestResult:
    """Daily long-only portfolio returns.

    Args:
        target_weights: [days, assets]; a row of weights (summing to <= 1; the rest is cash at 0 return) is
            traded into at the start of that day; a row of NaN keeps the drifted holdings. Row 0 must be set.
        returns: [days, assets] simple returns of each asset over each day.
        cost_bps: cost in basis points per unit of turnover.
    """
    w_target = np.asarray(target_weights, dtype=np.float64)
    r = np.asarray(returns, dtype=np.float64)
    if w_target.shape != r.shape or r.ndim != 2:
        raise ValueError(f"target_weights and returns must both be [days, assets]; got {w_target.shape}, {r.shape}")
    if np.isnan(w_target[0]).any():
        raise ValueError("target_weights[0] must be set: the portfolio starts in cash")
    if cost_bps < 0:
        raise ValueError(f"cost_bps={cost_bps} must be >= 0")
    days = len(r)
    held = np.zeros(r.shape[1])
    net, gross, turnover = np.zeros(days), np.zeros(days), np.zeros(days)
    for d in range(days):
        if not np.isnan(w_target[d]).any():
            turnover[d] = np.abs(w_target[d] - held).sum()
            held = w_target[d].copy()
        gross[d] = held @ r[d]
        net[d] = gross[d] - turnover[d] * cost_bps / 1e4
        value = 1.0 + gross[d]  # cash (1 - sum(held)) keeps its value
        held = held * (1.0 + r[d]) / value if value > 0 else np.zeros_like(held)
    equity = np.concatenate([[1.0], np.cumprod(1.0 + net)])
    return BacktestResult(returns=net, gross=gross, turnover=turnover, equity=equity)


def rebalance_every(weights: np.ndarray, period: int) -> np.ndarray:
    """Keep every `period`-th row of target weights (from row 0); NaN (hold) in between."""
    out = np.full_like(np.asarray(weights, dtype=np.float64), np.nan)
    out[::period] = weights[::period]
    return out


def ann_return(returns: np.ndarray, periods_per_year: int = TRADING_DAYS) -> float:
    """Geometric annualised return of a series of per-period simple returns."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) == 0:
        return float("nan")
    growth = np.prod(1.0 + returns)
    return float(growth ** (periods_per_year / len(returns)) - 1.0) if growth > 0 else -1.0


def sharpe(returns: np.ndarray, periods_per_year: int = TRADING_DAYS) -> float:
    """Annualised Sharpe ratio mean/std * sqrt(periods_per_year) (sample std, zero risk-free rate)."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) < 2:
        return float("nan")
    std = returns.std(ddof=1)
    return float(returns.mean() / std * np.sqrt(periods_per_year)) if std > 0 else float("nan")


def max_drawdown(equity: np.ndarray) -> float:
    """Largest peak-to-trough fall of an equity curve, as a positive fraction of the peak."""
    equity = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak)) if len(equity) else float("nan")

"""Selection metrics and the backtest against hand-computed values (tolerance 1e-12 unless stated)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from common.timeseries.selection import (
    ann_return,
    backtest,
    ic,
    max_drawdown,
    rank_ic,
    rebalance_every,
    sharpe,
    top_k_dropout_weights,
    top_k_weights,
)


def test_ic_is_mean_of_per_date_correlations():
    pred = np.array([[1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    real = np.array([[0.1, 0.2, 0.4], [0.0, 0.3, 0.1]])
    want = (stats.pearsonr(pred[0], real[0])[0] + stats.pearsonr(pred[1], real[1])[0]) / 2
    assert ic(pred, real) == pytest.approx(want, abs=1e-12)
    # Spearman by hand: date 0 ranks agree (1.0); date 1 pred ranks (3,1,2) vs real (1,3,2): rho = -1
    assert rank_ic(pred, real) == pytest.approx((1.0 - 1.0) / 2, abs=1e-12)


def test_ic_skips_constant_dates_and_is_scale_free():
    pred = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    real = np.array([[1.0, 2.0, 3.0], [0.1, 0.2, 0.3]])
    assert ic(pred, real) == pytest.approx(1.0)  # the constant date has no correlation and is skipped
    assert ic(pred * 7 + 3, real) == pytest.approx(1.0)


def test_two_asset_backtest_by_hand():
    # day 0: all in asset 0 (+10%); day 1: hold (drifted: still all in asset 0, -5%); day 2: switch to asset 1
    r = np.array([[0.10, 0.00], [-0.05, 0.02], [0.00, 0.03]])
    w = np.array([[1.0, 0.0], [np.nan, np.nan], [0.0, 1.0]])
    res = backtest(w, r, cost_bps=0.0)
    np.testing.assert_allclose(res.gross, [0.10, -0.05, 0.03], atol=1e-12)
    np.testing.assert_allclose(res.turnover, [1.0, 0.0, 2.0], atol=1e-12)
    np.testing.assert_allclose(res.equity, [1.0, 1.1, 1.045, 1.07635], atol=1e-12)
    assert max_drawdown(res.equity) == pytest.approx(1 - 1.045 / 1.1, abs=1e-12)


def test_half_half_drifts_between_rebalances():
    r = np.array([[0.10, -0.10], [0.10, 0.10]])
    res = backtest(np.array([[0.5, 0.5], [np.nan, np.nan]]), r)
    # after day 0 the weights drift to 0.55/0.45 of 1.0 -> day 1 return 0.1 on everything
    np.testing.assert_allclose(res.gross, [0.0, 0.10], atol=1e-12)
    rebalanced = backtest(np.array([[0.5, 0.5], [0.5, 0.5]]), r)
    assert rebalanced.turnover[1] == pytest.approx(abs(0.5 - 0.55) + abs(0.5 - 0.45), abs=1e-12)


def test_costs_reduce_returns_by_exactly_turnover_times_cost():
    rng = np.random.default_rng(0)
    r = rng.normal(0.0005, 0.02, size=(60, 4))
    w = rebalance_every(top_k_weights(rng.normal(size=(60, 4)), 2), 5)
    free, costly = backtest(w, r, 0.0), backtest(w, r, 25.0)
    np.testing.assert_allclose(free.returns - costly.returns, costly.turnover * 25e-4, atol=1e-15)
    assert (costly.turnover[::5] > 0).all() and (np.delete(costly.turnover, np.s_[::5]) == 0).all()
    assert ann_return(costly.returns) < ann_return(free.returns)


def test_annualised_numbers():
    daily = np.array([0.01, -0.005, 0.02, 0.0])
    assert ann_return(daily, 252) == pytest.approx(np.prod(1 + daily) ** (252 / 4) - 1, rel=1e-12)
    assert sharpe(daily, 252) == pytest.approx(daily.mean() / daily.std(ddof=1) * np.sqrt(252), rel=1e-12)
    assert max_drawdown(np.array([1.0, 1.2, 0.9, 1.3, 1.04])) == pytest.approx(0.25, abs=1e-12)


def test_top_k_weights_and_dropout():
    scores = np.array([[3.0, 1.0, 2.0, 0.0], [0.0, 3.0, 1.0, 2.0]])
    np.testing.assert_allclose(top_k_weights(scores, 2), [[0.5, 0, 0.5, 0], [0, 0.5, 0, 0.5]])
    # TopK-Dropout with n_drop=1 sells only the worst fallen asset (0) and buys the best new one (1)
    np.testing.assert_allclose(top_k_dropout_weights(scores, 2, 1), [[0.5, 0, 0.5, 0], [0, 0.5, 0.5, 0]])
    with pytest.raises(ValueError):
        top_k_weights(scores, 5)

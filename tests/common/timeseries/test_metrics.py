"""Forecast metrics against values computed by hand."""

import math

import pytest
import torch

from common.timeseries.metrics import dir_acc, mae, mape, r2, regression_metrics, rmse

TRUE = [100.0, 110.0, 105.0, 120.0]
PRED = [102.0, 108.0, 110.0, 115.0]
# errors: -2, +2, -5, +5 -> |e| = 2, 2, 5, 5; e² = 4, 4, 25, 25


def test_mae_rmse_mape_by_hand():
    assert mae(TRUE, PRED) == pytest.approx(3.5)
    assert rmse(TRUE, PRED) == pytest.approx(math.sqrt(58 / 4))
    expected_mape = 100 * (2 / 100 + 2 / 110 + 5 / 105 + 5 / 120) / 4
    assert mape(TRUE, PRED) == pytest.approx(expected_mape)


def test_r2_by_hand():
    mean = sum(TRUE) / 4  # 108.75
    ss_tot = sum((t - mean) ** 2 for t in TRUE)
    assert r2(TRUE, PRED) == pytest.approx(1 - 58 / ss_tot)
    assert r2(TRUE, TRUE) == pytest.approx(1.0)


def test_dir_acc_consecutive_series():
    # moves of the truth from the previous actual: +10, -5, +15; of the forecast: 108-100=+8, 110-110=0, 115-105=+10
    assert dir_acc(TRUE, PRED) == pytest.approx(2 / 3)


def test_dir_acc_with_explicit_previous_values():
    prev = [101.0, 101.0, 101.0, 101.0]
    # truth moves: -1, +9, +4, +19; forecast moves: +1, +7, +9, +14 -> first one wrong
    assert dir_acc(TRUE, PRED, prev) == pytest.approx(3 / 4)


def test_regression_metrics_dict_accepts_tensors():
    out = regression_metrics(torch.tensor(TRUE), torch.tensor(PRED))
    assert set(out) == {"mae", "rmse", "mape", "r2", "dir_acc"}
    assert out["mae"] == pytest.approx(3.5)
    assert all(isinstance(v, float) for v in out.values())

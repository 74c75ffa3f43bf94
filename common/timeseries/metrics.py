"""Forecast metrics on prices (not on scaled values): MAE, RMSE, MAPE, R² and direction accuracy.

All functions take 1-D array-likes of equal length and return plain floats, so they serve both the
Lightning modules (tensors converted with `.cpu().numpy()`) and scripts.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def _flat(values) -> np.ndarray:
    if hasattr(values, "detach"):  # torch tensors without importing torch here
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


def mae(y_true, y_pred) -> float:
    """Mean absolute error."""
    return float(skm.mean_absolute_error(_flat(y_true), _flat(y_pred)))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    return float(np.sqrt(skm.mean_squared_error(_flat(y_true), _flat(y_pred))))


def mape(y_true, y_pred) -> float:
    """Mean absolute percentage error, in percent (sklearn returns a fraction; the papers report %)."""
    return float(100.0 * skm.mean_absolute_percentage_error(_flat(y_true), _flat(y_pred)))


def r2(y_true, y_pred) -> float:
    """Coefficient of determination."""
    return float(skm.r2_score(_flat(y_true), _flat(y_pred)))


def dir_acc(y_true, y_pred, y_prev=None) -> float:
    """Fraction of steps where the forecast moves in the same direction as the truth.

    For each target t the direction is measured from the last observed value `y_prev[t]` (the actual
    value one step before the target): sign(pred_t - prev_t) == sign(true_t - prev_t). Without `y_prev`
    the targets are taken as one consecutive series, so prev_t = true_{t-1} and the first target is
    skipped. A flat step (sign 0) counts as a hit only when both signs are 0.
    """
    true, pred = _flat(y_true), _flat(y_pred)
    if y_prev is None:
        prev, true, pred = true[:-1], true[1:], pred[1:]
    else:
        prev = _flat(y_prev)
    if len(true) == 0:
        return float("nan")
    return float(np.mean(np.sign(pred - prev) == np.sign(true - prev)))


def regression_metrics(y_true, y_pred, y_prev=None) -> dict[str, float]:
    """All the forecast metrics as one dict: mae, rmse, mape, r2, dir_acc (see `dir_acc` for `y_prev`)."""
    return {
        "mae": mae(y_true, y_pred),
        "rmse": rmse(y_true, y_pred),
        "mape": mape(y_true, y_pred),
        "r2": r2(y_true, y_pred),
        "dir_acc": dir_acc(y_true, y_pred, y_prev),
    }

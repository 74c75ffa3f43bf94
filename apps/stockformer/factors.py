"""Causal price(-volume) factors per stock and date: the model's "bonus" input.

The paper feeds 360 Qlib Alpha360 factors (the last 60 days of OHLCV, each divided by today's close or
volume). The embedded panel has closes only, so the default factor set is built from closes: log returns
over several horizons, volatility, 12-1 momentum, moving-average gaps, distance from the recent high and
RSI (the `ta` library). When the panel has open/high/low/volume, price-volume factors are added: the day's
range and body, where the close sits in the range, volume relative to its averages, and the 20-day
correlation of returns with volume changes.

Every factor at date t uses data up to and including t only (rolling windows look back, nothing is
centred or back-filled), so appending future rows never changes a past value (tests check this). The
first `WARMUP` dates are NaN for the longest look-back (252 days); callers drop them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from common.timeseries.panel import Panel

WARMUP = 252
PRICE_FACTORS = (
    "ret_1",
    "ret_5",
    "ret_10",
    "ret_20",
    "ret_60",
    "vol_20",
    "vol_60",
    "mom_12_1",
    "ma_gap_5",
    "ma_gap_20",
    "ma_gap_60",
    "from_high_60",
    "rsi_14",
)
VOLUME_FACTORS = ("range_1", "body_1", "close_loc", "volume_gap_20", "volume_trend_5_60", "pv_corr_20")
MOMENTUM = "mom_12_1"  # also the 12-1 momentum baseline's score


def factor_names(use_volume: bool) -> list[str]:
    return list(PRICE_FACTORS) + (list(VOLUME_FACTORS) if use_volume else [])


def _frame(panel: Panel, name: str) -> pd.DataFrame:
    return pd.DataFrame(panel.fields[name], index=panel.dates, columns=panel.tickers)


def _rsi(close: pd.DataFrame, window: int = 14) -> pd.DataFrame:
    from ta.momentum import RSIIndicator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # flat windows: 0/0 inside ta, mapped to NaN
        return close.apply(lambda s: RSIIndicator(s, window=window, fillna=False).rsi())


def compute_factors(panel: Panel, names: list[str]) -> np.ndarray:
    """Factors [dates, tickers, len(names)] float32, NaN where the look-back is not yet full."""
    close = _frame(panel, "close")
    log_close = np.log(close)
    ret = log_close.diff()
    out: dict[str, pd.DataFrame] = {}
    for h in (1, 5, 10, 20, 60):
        out[f"ret_{h}"] = log_close - log_close.shift(h)
    for w in (20, 60):
        out[f"vol_{w}"] = ret.rolling(w).std()
    out["mom_12_1"] = log_close.shift(21) - log_close.shift(252)
    for w in (5, 20, 60):
        out[f"ma_gap_{w}"] = close / close.rolling(w).mean() - 1.0
    out["from_high_60"] = close / close.rolling(60).max() - 1.0
    out["rsi_14"] = _rsi(close) / 100.0 - 0.5
    if any(n in VOLUME_FACTORS for n in names):
        if not panel.has_volume:
            raise ValueError(f"volume factors {[n for n in names if n in VOLUME_FACTORS]} need open/high/low/volume")
        high, low, open_ = _frame(panel, "high"), _frame(panel, "low"), _frame(panel, "open")
        log_volume = np.log1p(_frame(panel, "volume"))
        span = (high - low).where(high > low)
        out["range_1"] = (high - low) / close
        out["body_1"] = close / open_ - 1.0
        out["close_loc"] = ((close - low) / span - 0.5).fillna(0.0).where(close.notna())
        out["volume_gap_20"] = log_volume - log_volume.rolling(20).mean()
        out["volume_trend_5_60"] = log_volume.rolling(5).mean() - log_volume.rolling(60).mean()
        out["pv_corr_20"] = ret.rolling(20).corr(log_volume.diff()).clip(-1, 1)
    unknown = [n for n in names if n not in out]
    if unknown:
        raise ValueError(f"unknown factor(s) {unknown}; known: {sorted(out)}")
    stacked = np.stack([out[n].to_numpy(dtype=np.float64) for n in names], axis=-1)
    stacked[~np.isfinite(stacked)] = np.nan
    return stacked.astype(np.float32)


def daily_returns(close: np.ndarray) -> np.ndarray:
    """Simple returns [dates, tickers]; row 0 is NaN (no previous close)."""
    r = np.full_like(close, np.nan, dtype=np.float64)
    r[1:] = close[1:] / close[:-1] - 1.0
    return r

"""Causal technical indicators (the `ta` library) for OHLCV frames, with their warm-up rows dropped.

Every indicator at row t reads rows <= t only (rolling windows and recursive EMAs), so appending future
rows never changes a past value (tests/common/timeseries/test_indicators.py checks it). The first rows,
where an indicator's window is not yet full, are dropped as a block whose length depends only on the
chosen windows (`warmup_rows`), never on the data.

The crypto paper (arXiv 2403.03606) names RSI, moving averages (SMA, EMA), Bollinger Bands and CCI; MACD
is added as the usual trend companion. Windows are the indicators' textbook defaults.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from ta.momentum import RSIIndicator
from ta.trend import MACD, CCIIndicator, EMAIndicator, SMAIndicator
from ta.volatility import BollingerBands

from common.errors import ConfigError, check_choice

OHLCV = ("open", "high", "low", "close", "volume")


@dataclass(frozen=True)
class Indicator:
    """An indicator: `compute(frame) -> {column: series}` and its warm-up (leading rows that are NaN)."""

    compute: Callable[[pd.DataFrame], dict[str, pd.Series]]
    warmup: int


def _macd(frame: pd.DataFrame) -> dict[str, pd.Series]:
    macd = MACD(frame["close"], window_slow=26, window_fast=12, window_sign=9)
    return {"macd": macd.macd(), "macd_signal": macd.macd_signal(), "macd_diff": macd.macd_diff()}


def _bollinger(frame: pd.DataFrame) -> dict[str, pd.Series]:
    bands = BollingerBands(frame["close"], window=20, window_dev=2)
    return {"bb_high": bands.bollinger_hband(), "bb_mid": bands.bollinger_mavg(), "bb_low": bands.bollinger_lband()}


INDICATORS: dict[str, Indicator] = {
    "rsi": Indicator(lambda f: {"rsi_14": RSIIndicator(f["close"], window=14).rsi()}, warmup=13),
    "sma": Indicator(
        lambda f: {
            "sma_7": SMAIndicator(f["close"], window=7).sma_indicator(),
            "sma_21": SMAIndicator(f["close"], window=21).sma_indicator(),
        },
        warmup=20,
    ),
    "ema": Indicator(
        lambda f: {
            "ema_12": EMAIndicator(f["close"], window=12).ema_indicator(),
            "ema_26": EMAIndicator(f["close"], window=26).ema_indicator(),
        },
        warmup=25,
    ),
    "bollinger": Indicator(_bollinger, warmup=19),
    "cci": Indicator(lambda f: {"cci_20": CCIIndicator(f["high"], f["low"], f["close"], window=20).cci()}, warmup=19),
    "macd": Indicator(_macd, warmup=33),  # signal line: EMA(9) of MACD, which starts at the 26th row
}
DEFAULT_INDICATORS = ("rsi", "sma", "ema", "bollinger", "cci", "macd")


def warmup_rows(names=DEFAULT_INDICATORS) -> int:
    """Leading rows without a value for at least one of the named indicators."""
    for name in names:
        check_choice("indicators", name, INDICATORS)
    return max((INDICATORS[name].warmup for name in names), default=0)


def add_indicators(frame: pd.DataFrame, names=DEFAULT_INDICATORS) -> pd.DataFrame:
    """`frame` (columns open, high, low, close, volume; rows in time order) plus the indicators' columns,
    without the first `warmup_rows(names)` rows. Raises ConfigError for an unknown name or too few rows."""
    names = tuple(names)
    drop = warmup_rows(names)
    missing = [c for c in OHLCV if c not in frame.columns]
    if missing:
        raise ValueError(f"add_indicators needs columns {list(OHLCV)}; missing {missing}")
    if len(frame) <= drop:
        raise ConfigError("indicators", list(names), f"a series longer than their {drop} warm-up rows ({len(frame)})")
    columns = {}
    for name in names:
        columns.update(INDICATORS[name].compute(frame))
    out = pd.concat([frame, pd.DataFrame(columns, index=frame.index)], axis=1).iloc[drop:]
    # After warm-up a value can still be undefined only where a window is perfectly flat (CCI's mean
    # deviation is 0): the price then sits exactly on its average, which CCI scores as 0.
    added = list(columns)
    out[added] = out[added].replace([np.inf, -np.inf], np.nan).fillna(0.0)
    return out

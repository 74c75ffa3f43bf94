"""A small synthetic OHLCV panel (random walks) for the Stockformer tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.timeseries.panel import Panel, to_long_frame


def synthetic_panel(n_dates: int = 420, tickers=("AAA", "BBB", "CCC", "DDD"), seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    dates = pd.bdate_range("2015-01-01", periods=n_dates)
    close = 50 * np.exp(np.cumsum(rng.normal(0.0003, 0.015, size=(n_dates, len(tickers))), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.005, close.shape))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.01, close.shape))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.01, close.shape))
    volume = rng.integers(1_000, 50_000, close.shape).astype(np.float64)
    return Panel(dates, list(tickers), {"open": open_, "high": high, "low": low, "close": close, "volume": volume})


@pytest.fixture
def panel_csv(tmp_path):
    path = tmp_path / "panel.csv"
    to_long_frame(synthetic_panel()).to_csv(path, index=False)
    return path

"""Synthetic OHLCV files for the crypto_forecast tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def ohlcv_frame(n: int = 300, seed: int = 0, freq: str = "D") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    spread = np.abs(rng.normal(0, 0.01, n)) * close
    return pd.DataFrame(
        {
            "date": pd.date_range("2021-01-01", periods=n, freq=freq).strftime("%Y-%m-%d %H:%M"),
            "open": close * (1 + rng.normal(0, 0.003, n)),
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "volume": rng.uniform(10, 100, n),
        }
    )


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path

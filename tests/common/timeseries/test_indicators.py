"""Technical indicators are causal and drop exactly their warm-up rows."""

import numpy as np
import pandas as pd
import pytest

from common.errors import ConfigError
from common.timeseries.indicators import INDICATORS, add_indicators, warmup_rows


def _ohlcv(n, seed=0):
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.02, n)))
    spread = np.abs(rng.normal(0, 0.01, n)) * close
    return pd.DataFrame(
        {
            "open": close * (1 + rng.normal(0, 0.005, n)),
            "high": close + spread,
            "low": close - spread,
            "close": close,
            "volume": rng.uniform(1, 10, n),
        },
        index=pd.date_range("2020-01-01", periods=n, freq="D"),
    )


def test_appending_future_rows_does_not_change_past_values():
    full = _ohlcv(300)
    past = add_indicators(full.iloc[:200])
    again = add_indicators(full).loc[past.index]
    pd.testing.assert_frame_equal(past, again, rtol=1e-10, atol=1e-10)


def test_changing_the_future_does_not_change_the_past():
    full = _ohlcv(300)
    changed = full.copy()
    changed.iloc[250:] *= 3.0
    a, b = add_indicators(full), add_indicators(changed)
    cut = full.index[249]
    pd.testing.assert_frame_equal(a.loc[:cut], b.loc[:cut])
    assert not np.allclose(a.loc[full.index[260] :, "ema_12"], b.loc[full.index[260] :, "ema_12"])


@pytest.mark.parametrize("name", sorted(INDICATORS))
def test_declared_warmup_is_exactly_the_leading_nan_rows(name):
    frame = _ohlcv(120)
    first_valid = max(series.first_valid_index() for series in INDICATORS[name].compute(frame).values())
    assert first_valid == frame.index[INDICATORS[name].warmup]


def test_warmup_rows_are_dropped_and_no_value_is_missing():
    frame = _ohlcv(120)
    out = add_indicators(frame)
    assert len(out) == 120 - warmup_rows() and out.index[0] == frame.index[33]
    assert np.isfinite(out.to_numpy()).all()
    assert {"rsi_14", "sma_7", "ema_26", "bb_high", "bb_low", "cci_20", "macd", "macd_signal"} <= set(out.columns)
    np.testing.assert_allclose(out["sma_7"], frame["close"].rolling(7).mean().iloc[33:])


def test_flat_prices_give_zero_cci_not_nan():
    frame = _ohlcv(80)
    frame.loc[frame.index[40:70], ["open", "high", "low", "close"]] = 50.0
    out = add_indicators(frame)
    assert np.isfinite(out.to_numpy()).all()
    assert out.loc[frame.index[65], "cci_20"] == 0.0


def test_unknown_indicator_and_short_series_are_config_errors():
    with pytest.raises(ConfigError, match="indicators"):
        add_indicators(_ohlcv(100), names=("rsi", "vwap"))
    with pytest.raises(ConfigError, match="warm-up"):
        add_indicators(_ohlcv(30))

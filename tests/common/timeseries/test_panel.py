"""Reading stock panels: the embedded skfolio S&P 500 closes and long-format CSVs with clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from common.errors import DatasetError, InputError
from common.timeseries.panel import read_panel_csv, read_sp500_skfolio, skfolio_sp500_path, to_long_frame


def _long(n_dates: int = 5, tickers=("AAA", "BBB")) -> pd.DataFrame:
    dates = pd.bdate_range("2024-01-01", periods=n_dates)
    rows = []
    for i, d in enumerate(dates):
        for j, t in enumerate(tickers):
            c = 10.0 + i + j
            rows.append(
                {
                    "date": d.strftime("%Y-%m-%d"),
                    "ticker": t,
                    "open": c,
                    "high": c + 1,
                    "low": c - 1,
                    "close": c + 0.5,
                    "volume": 1000 + i,
                }
            )
    return pd.DataFrame(rows)


def test_embedded_panel():
    try:
        path = skfolio_sp500_path()
    except DatasetError:
        pytest.skip("skfolio wheel not installed")
    panel = read_sp500_skfolio(path)
    assert len(panel.tickers) == 20 and "AAPL" in panel.tickers
    assert panel.dates[0] == pd.Timestamp("1990-01-02") and panel.dates[-1].year == 2022
    assert panel.dates.is_monotonic_increasing and np.isfinite(panel.close).all() and (panel.close > 0).all()
    assert not panel.has_volume


def test_csv_round_trip(tmp_path):
    frame = _long()
    path = tmp_path / "panel.csv"
    frame.sample(frac=1.0, random_state=0).sort_values("date", kind="stable").to_csv(path, index=False)
    panel = read_panel_csv(path)
    assert panel.tickers == ["AAA", "BBB"] and len(panel) == 5 and panel.has_volume
    np.testing.assert_allclose(panel.close[:, 1], 11.5 + np.arange(5))
    back = to_long_frame(panel)
    assert list(back.columns) == ["date", "ticker", "open", "high", "low", "close", "volume"] and len(back) == 10


def test_dates_missing_for_one_ticker_are_dropped(tmp_path):
    frame = _long().drop(index=3)  # BBB on the second date
    frame.to_csv(tmp_path / "p.csv", index=False)
    panel = read_panel_csv(tmp_path / "p.csv")
    assert len(panel) == 4 and pd.Timestamp("2024-01-02") not in panel.dates


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda f: f.drop(columns=["volume"]), r"missing column\(s\) \['volume'\]"),
        (lambda f: pd.concat([f, f.iloc[[2]]]), r"duplicate rows for ticker AAA on 2024-01-02"),
        (lambda f: f.iloc[::-1], r"dates of ticker .* are not sorted ascending"),
        (lambda f: f.assign(close=f["close"].astype(object).where(f.index != 4, "abc")), r"non-numeric close 'abc'"),
        (lambda f: f.assign(close=f["close"].where(f.index != 4, -1.0)), r"non-positive close"),
        (lambda f: f.assign(date=f["date"].where(f.index != 0, "yesterday")), r"unparsable date"),
        # a year Python's `date` cannot hold (pandas parses it): named as numpy writes it
        (lambda f: f.assign(date=f["date"].where(f.index != 4, "-7-01-02")), r"not sorted ascending \(at -007-01-02\)"),
    ],
)
def test_bad_csv_names_file_and_problem(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    mutate(_long()).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=message) as err:
        read_panel_csv(path)
    assert str(path) in str(err.value) and "stock_panel_csv" in str(err.value)
    with pytest.raises(InputError, match=message):
        read_panel_csv(path, user_input=True)


def test_missing_file_and_close_only(tmp_path):
    with pytest.raises(DatasetError, match="file not found"):
        read_panel_csv(tmp_path / "nope.csv")
    _long()[["date", "ticker", "close"]].to_csv(tmp_path / "c.csv", index=False)
    panel = read_panel_csv(tmp_path / "c.csv", required=("close",))
    assert set(panel.fields) == {"close"} and not panel.has_volume

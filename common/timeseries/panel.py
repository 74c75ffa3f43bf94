"""Stock panels: the embedded S&P 500 closes that skfolio ships, and a user's long-format OHLCV CSV.

A panel is a `Panel(dates, tickers, fields)`: `fields[name]` is a float64 array [dates, tickers] for each of
`close` (always) and `open`, `high`, `low`, `volume` when the source has them. Dates are strictly
increasing; every ticker has a value on every date (dates missing for some ticker are dropped, so the
cross-section is the same stock universe on each date).

- Embedded: `skfolio/datasets/data/sp500_dataset.csv.gz` from the installed wheel `skfolio==1.12.2`
  (found with importlib.util.find_spec, never imported: skfolio's own dependencies are not installed).
  20 tickers, daily adjusted closes, 1990-01-02 .. 2022-12-28, no volume.
- Real: a long-format CSV `date,ticker,open,high,low,close,volume` (one row per ticker and date, dates
  sorted ascending within each ticker). `read_panel_csv` raises DatasetError (training data) or InputError
  (predict) naming the file and the problem: missing columns, unparsable dates or numbers, infinite values
  (`inf`; an empty cell is a missing value), duplicate (date, ticker) rows, unsorted dates, non-positive prices.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from common.errors import DatasetError, InputError

PRICE_FIELDS = ("open", "high", "low", "close")
OHLCV = (*PRICE_FIELDS, "volume")
LONG_COLUMNS = ("date", "ticker", *OHLCV)
SKFOLIO_FILE = ("datasets", "data", "sp500_dataset.csv.gz")
SKFOLIO_EXPECTED = (
    "the wheel skfolio==1.12.2 installed (pip install --no-deps skfolio==1.12.2, done by `make setup`), "
    "which ships skfolio/datasets/data/sp500_dataset.csv.gz (Date + 20 ticker columns of adjusted closes)"
)
CSV_EXPECTED = (
    "a long-format CSV with a header row and columns date,ticker,open,high,low,close,volume (open/high/low/"
    "volume optional where noted), one row per (date, ticker), dates ascending within each ticker"
)


@dataclass
class Panel:
    dates: pd.DatetimeIndex
    tickers: list[str]
    fields: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def close(self) -> np.ndarray:
        return self.fields["close"]

    @property
    def has_volume(self) -> bool:
        return all(name in self.fields for name in OHLCV)

    def __len__(self) -> int:
        return len(self.dates)

    def slice(self, start: int, stop: int) -> Panel:
        return Panel(self.dates[start:stop], list(self.tickers), {k: v[start:stop] for k, v in self.fields.items()})

    def select(self, tickers: list[str]) -> Panel:
        index = [self.tickers.index(t) for t in tickers]
        return Panel(self.dates, list(tickers), {k: v[:, index] for k, v in self.fields.items()})


def skfolio_sp500_path() -> Path:
    """The skfolio wheel's S&P 500 file, located without importing skfolio."""
    spec = importlib.util.find_spec("skfolio")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("skfolio (python package)", SKFOLIO_EXPECTED, card="sp500_skfolio")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*SKFOLIO_FILE)
    if not path.is_file():
        raise DatasetError(path, SKFOLIO_EXPECTED, card="sp500_skfolio")
    return path


def read_sp500_skfolio(path: Path | None = None) -> Panel:
    """The embedded panel: 20 S&P 500 stocks, daily adjusted closes (no volume)."""
    path = Path(path) if path is not None else skfolio_sp500_path()
    try:
        wide = pd.read_csv(path, parse_dates=["Date"], index_col="Date")
    except Exception as e:  # noqa: BLE001 - any failure to read is a malformed file
        raise DatasetError(path, SKFOLIO_EXPECTED, card="sp500_skfolio", problem=f"cannot read ({e})") from e
    if wide.shape[1] < 2 or not wide.index.is_monotonic_increasing or wide.index.has_duplicates:
        raise DatasetError(path, SKFOLIO_EXPECTED, card="sp500_skfolio", problem="unexpected layout")
    wide = wide.astype(np.float64).dropna(how="any")
    infinite = np.argwhere(np.isinf(wide.to_numpy()))
    if len(infinite):
        row, col = infinite[0]
        problem = f"non-finite close of {wide.columns[col]} on {_day(wide.index[row])}"
        raise DatasetError(path, SKFOLIO_EXPECTED, card="sp500_skfolio", problem=problem)
    return Panel(pd.DatetimeIndex(wide.index), [str(c) for c in wide.columns], {"close": wide.to_numpy()})


def _day(timestamp: pd.Timestamp) -> str:
    """YYYY-MM-DD of any parsed date: `Timestamp.date()` fails for years Python's `date` lacks (e.g. -7)."""
    return str(np.datetime_as_string(timestamp.to_datetime64(), unit="D"))


class _Fail:
    """Raise the right error type for where the CSV came from (training data or a user's predict input)."""

    def __init__(self, path: Path, user_input: bool, card: str):
        self.path, self.user_input, self.card = path, user_input, card

    def __call__(self, problem: str, expected: str = CSV_EXPECTED):
        if self.user_input:
            return InputError(self.path, expected, problem=problem)
        return DatasetError(self.path, expected, card=self.card, problem=problem)


def read_panel_csv(
    path: str | Path,
    required: tuple[str, ...] = OHLCV,
    user_input: bool = False,
    card: str = "stock_panel_csv",
) -> Panel:
    """Read a long-format panel CSV into a Panel (see the module docstring for the checks).

    `required` are the value columns that must be present (besides date and ticker); the others of OHLCV
    are read when present. `user_input=True` raises InputError (predict), else DatasetError.
    """
    path = Path(path)
    fail = _Fail(path, user_input, card)
    if not path.is_file():
        raise fail("file not found")
    try:
        frame = pd.read_csv(path)
    except Exception as e:  # noqa: BLE001 - any failure to parse is a malformed file
        raise fail(f"cannot read as CSV ({e})") from e
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in ("date", "ticker", *required) if c not in frame.columns]
    if missing:
        raise fail(f"missing column(s) {missing} (found {list(frame.columns)})")
    if frame.empty:
        raise fail("no rows")
    values = [c for c in OHLCV if c in frame.columns]
    frame = frame[["date", "ticker", *values]].copy()
    frame["ticker"] = frame["ticker"].astype(str).str.strip()
    try:
        frame["date"] = pd.to_datetime(frame["date"], format="mixed")
    except (ValueError, TypeError) as e:
        raise fail(f"unparsable date ({e})") from e
    for c in values:
        numeric = pd.to_numeric(frame[c], errors="coerce")
        bad = numeric.isna() & frame[c].notna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise fail(f"non-numeric {c} {frame[c].iloc[row]!r} on data row {row + 1}")
        infinite = np.isinf(numeric.to_numpy(np.float64))  # NaN (an empty cell) is a missing value, inf is not
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise fail(f"non-finite {c} {float(numeric.iloc[row])} on data row {row + 1}")
        frame[c] = numeric.astype(np.float64)
    dup = frame.duplicated(["date", "ticker"], keep=False)
    if dup.any():
        row = frame[dup].iloc[0]
        raise fail(f"duplicate rows for ticker {row['ticker']} on {_day(row['date'])} ({int(dup.sum())} rows)")
    for ticker, dates in frame.groupby("ticker", sort=False)["date"]:
        if not dates.is_monotonic_increasing:
            where = int(np.flatnonzero(np.diff(dates.to_numpy()) < np.timedelta64(0))[0])
            raise fail(f"dates of ticker {ticker} are not sorted ascending (at {_day(dates.iloc[where + 1])})")
    for c in (c for c in PRICE_FIELDS if c in values):
        if (frame[c] <= 0).any():
            raise fail(f"non-positive {c} price(s) ({int((frame[c] <= 0).sum())} rows)")
    if "volume" in values and (frame["volume"] < 0).any():
        raise fail("negative volume")

    wide = {c: frame.pivot(index="date", columns="ticker", values=c).sort_index() for c in values}
    complete = np.logical_and.reduce([w.notna().all(axis=1).to_numpy() for w in wide.values()])
    if not complete.any():
        raise fail("no date on which every ticker has all values (the panel must share dates across tickers)")
    tickers = [str(t) for t in wide["close"].columns]
    dates = pd.DatetimeIndex(wide["close"].index[complete])
    return Panel(dates, tickers, {c: w.to_numpy()[complete] for c, w in wide.items()})


def to_long_frame(panel: Panel) -> pd.DataFrame:
    """The panel back in the long CSV layout (date, ticker, fields...): used to write examples and tests."""
    parts = {
        "date": np.repeat(panel.dates.strftime("%Y-%m-%d").to_numpy(), len(panel.tickers)),
        "ticker": np.tile(panel.tickers, len(panel.dates)),
    }
    for name in OHLCV:
        if name in panel.fields:
            parts[name] = panel.fields[name].reshape(-1)
    return pd.DataFrame(parts)

"""Read and check an OHLCV CSV (date, open, high, low, close, volume): the user's format for `data.root`
and for `make predict`. Problems are reported as one sentence naming the column, row or date at fault;
the callers wrap it in DatasetError (training data) or InputError (predict)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.timeseries.indicators import OHLCV

COLUMNS = ("date", *OHLCV)
EXPECTED = (
    "a CSV with a header row and columns date, open, high, low, close, volume (any case; extra columns are"
    " ignored), one row per time step, dates strictly increasing"
)


class OhlcvProblem(ValueError):
    """What is wrong with an OHLCV file, in words."""


def read_ohlcv(path: str | Path) -> pd.DataFrame:
    """The file as a frame indexed by date with float columns open, high, low, close, volume."""
    try:
        raw = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise OhlcvProblem(f"cannot read as CSV ({e})") from e
    return check_ohlcv(raw)


def check_ohlcv(raw: pd.DataFrame) -> pd.DataFrame:
    """Validate and convert a raw frame (see `read_ohlcv`). Rows are numbered as in the file (header = row 1)."""
    by_lower = {str(c).strip().lower(): c for c in raw.columns}
    missing = [c for c in COLUMNS if c not in by_lower]
    if missing:
        raise OhlcvProblem(f"missing column(s) {missing}; found {list(map(str, raw.columns))}")
    if raw.empty:
        raise OhlcvProblem("no data rows")
    frame = raw[[by_lower[c] for c in COLUMNS]].copy()
    frame.columns = list(COLUMNS)
    dates = pd.to_datetime(frame["date"], errors="coerce", format="mixed")
    if dates.isna().any():
        i = int(np.flatnonzero(dates.isna())[0])
        raise OhlcvProblem(f"unreadable date {frame['date'].iloc[i]!r} in row {i + 2}")
    for col in OHLCV:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(np.float64, na_value=np.nan))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            value = frame[col].iloc[i]
            shown = "empty" if pd.isna(value) else repr(value)
            raise OhlcvProblem(f"column {col!r} has a missing or non-numeric value ({shown}) in row {i + 2}")
        frame[col] = values.astype(np.float64)
        with np.errstate(over="ignore"):  # the model reads float32: a larger value would become inf there
            beyond = ~np.isfinite(frame[col].to_numpy(np.float32))
        if beyond.any():
            i = int(np.flatnonzero(beyond)[0])
            raise OhlcvProblem(f"column {col!r} has a value beyond float32's range (3.4e38) in row {i + 2}")
    duplicated = dates.duplicated()
    if duplicated.any():
        i = int(np.flatnonzero(duplicated)[0])
        raise OhlcvProblem(f"duplicate date {dates.iloc[i]} in row {i + 2}")
    step_back = dates.diff() < pd.Timedelta(0)
    if step_back.any():
        i = int(np.flatnonzero(step_back)[0])
        raise OhlcvProblem(
            f"dates are not sorted: row {i + 2} ({dates.iloc[i]}) comes before row {i + 1} ({dates.iloc[i - 1]}); "
            "sort the file by date, oldest first"
        )
    prices = frame[["open", "high", "low", "close"]]
    if (prices <= 0).any().any():
        i = int(np.flatnonzero((prices <= 0).any(axis=1))[0])
        raise OhlcvProblem(f"non-positive price in row {i + 2}")
    if (frame["volume"] < 0).any():
        i = int(np.flatnonzero(frame["volume"] < 0)[0])
        raise OhlcvProblem(f"negative volume in row {i + 2}")
    frame.index = pd.DatetimeIndex(dates, name="date")
    return frame[list(OHLCV)]

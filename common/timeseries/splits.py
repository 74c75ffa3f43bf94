"""Strictly chronological splits, leak-free windows and a scaler fitted on the training rows only.

Window policy (one rule, used by every forecasting app):
- A split is a contiguous run of rows: train = [0, train_end), val = [train_end, val_end), test = [val_end, n).
- Each split's windows are built inside it. A window's input is the `lookback` rows before its target
  row, t-lookback .. t-1, and all of them lie in the same split as the target. So the first `lookback`
  rows of val and of test serve only as history and are the target of no window at all: the test split's
  history is never a target of another split, and no train or val window ever reads a val/test row.
  The price is `lookback` unused targets per split; the gain is that a test metric can never have seen
  a row that another split was scored or trained on.
- Scalers are fitted on the train rows only (`fit_scaler`), so a change to any later value leaves them
  unchanged (tests/common/timeseries/test_splits.py proves both properties).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from common.errors import ConfigError, check_choice, check_range

SCALERS = {"standard": StandardScaler, "minmax": MinMaxScaler}


@dataclass(frozen=True)
class SplitBounds:
    """Row boundaries of a chronological split: train [0, train_end), val [train_end, val_end), test [val_end, n)."""

    train_end: int
    val_end: int
    n: int

    @property
    def train(self) -> slice:
        return slice(0, self.train_end)

    @property
    def val(self) -> slice:
        return slice(self.train_end, self.val_end)

    @property
    def test(self) -> slice:
        return slice(self.val_end, self.n)

    def part(self, name: str) -> slice:
        check_choice("split", name, ("train", "val", "test"))
        return getattr(self, name)

    def check_lookback(self, lookback: int, key: str = "lookback") -> None:
        """Raise ConfigError unless every split has at least one target after its `lookback` history rows."""
        shortest = min(self.train_end, self.val_end - self.train_end, self.n - self.val_end)
        if shortest <= lookback:
            raise ConfigError(key, lookback, f"fewer than the rows of the shortest split ({shortest}); {self}")


def split_by_fraction(n: int, val_fraction: float = 0.15, test_fraction: float = 0.15) -> SplitBounds:
    """The last `test_fraction` of the rows are test, the `val_fraction` before them val, the rest train."""
    check_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError("val_fraction", val_fraction, f"val_fraction + test_fraction < 1 (test {test_fraction})")
    val_end = n - int(round(n * test_fraction))
    train_end = val_end - int(round(n * val_fraction))
    if not 0 < train_end < val_end < n:
        raise ConfigError("val_fraction", val_fraction, f"fractions leaving every split non-empty for {n} rows")
    return SplitBounds(train_end, val_end, n)


def split_by_date(dates, val_start, test_start) -> SplitBounds:
    """Split sorted `dates` so val starts at the first date >= `val_start` and test at the first >= `test_start`."""
    stamps = np.asarray(dates, dtype="datetime64[ns]")
    if np.any(np.diff(stamps.astype(np.int64)) <= 0):
        raise ConfigError("dates", "unsorted", "strictly increasing dates")
    val, test = np.datetime64(val_start, "ns"), np.datetime64(test_start, "ns")
    if not val < test:
        raise ConfigError("val_start", str(val_start), f"a date before test_start={test_start}")
    train_end, val_end = int(np.searchsorted(stamps, val)), int(np.searchsorted(stamps, test))
    n = len(stamps)
    if not 0 < train_end < val_end < n:
        span = f"{stamps[0]} .. {stamps[-1]}" if n else "no rows"
        raise ConfigError("val_start", str(val_start), f"dates leaving every split non-empty within {span}")
    return SplitBounds(train_end, val_end, n)


@dataclass(frozen=True)
class Windows:
    """Windows of one split: x (M, lookback, F) inputs, y (M, ...) targets, prev (M, ...) the target series one
    step before each target (the last observed value, for direction accuracy), index (M,) target rows."""

    x: np.ndarray
    y: np.ndarray
    prev: np.ndarray
    index: np.ndarray

    def __len__(self) -> int:
        return len(self.index)


def target_indices(part: slice, lookback: int) -> np.ndarray:
    """Target rows of a split's windows: every row of the split after its first `lookback` (history) rows."""
    return np.arange(part.start + lookback, part.stop)


def make_windows(features: np.ndarray, targets: np.ndarray, part: slice, lookback: int) -> Windows:
    """Windows whose inputs `features[t-lookback:t]` and target `targets[t]` all lie inside `part`."""
    check_range("lookback", lookback, 1)
    features, targets = np.asarray(features), np.asarray(targets)
    if len(features) != len(targets):
        raise ValueError(f"features ({len(features)} rows) and targets ({len(targets)} rows) differ in length")
    index = target_indices(part, lookback)
    if len(index) == 0:
        raise ConfigError("lookback", lookback, f"fewer than the {part.stop - part.start} rows of split {part}")
    # Read only the split's own rows, so nothing outside it can reach a window even by an off-by-one.
    own = features[part.start : part.stop]
    views = np.lib.stride_tricks.sliding_window_view(own, lookback, axis=0)  # (rows-lookback+1, F..., lookback)
    x = np.moveaxis(views, -1, 1)[: len(index)]  # window i covers own rows i .. i+lookback-1 -> target i+lookback
    return Windows(x=np.ascontiguousarray(x), y=targets[index], prev=targets[index - 1], index=index)


def fit_scaler(values: np.ndarray, bounds: SplitBounds, kind: str = "standard"):
    """A sklearn scaler (`standard` or `minmax`) fitted on the train rows of `values` only."""
    check_choice("scaler", kind, SCALERS)
    values = np.asarray(values, dtype=np.float64)
    train = values[bounds.train]
    return SCALERS[kind]().fit(train.reshape(len(train), -1))

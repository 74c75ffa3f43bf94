"""A windowed LightningDataModule for one time series: the past `lookback` rows of features -> the next target.

A subclass says how to load its frame (`load_frame`): rows in time order, a DatetimeIndex, numeric feature
columns and one target column. This base splits it chronologically (`common.timeseries.splits`: by fraction
or by date), builds each split's windows inside that split, and serves batches `(x, y, prev)`:
x [B, lookback, F] float32 raw features, y [B] the target at the next row, prev [B] the target one row
before it (the last observed value: the naive forecast and the reference for direction accuracy).
Scaling is left to the model (fit it with `train_rows()` / `windows["train"]`), so that the statistics
can travel with an export.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, TensorDataset

from common.data.loaders import SplitDataLoaders
from common.errors import check_range
from common.timeseries.splits import SplitBounds, Windows, make_windows, split_by_date, split_by_fraction

SPLITS = ("train", "val", "test")


class WindowedSeriesDataModule(SplitDataLoaders, L.LightningDataModule):
    """Base for single-series forecasting data. Subclasses implement `load_frame()` and `model_kwargs()`.

    Args:
        lookback: rows of history per window.
        target: the target column of the loaded frame.
        val_fraction, test_fraction: chronological split by fraction (used unless both dates are set).
        val_start, test_start: chronological split by date (first row on or after each date).
        batch_size: training and evaluation batch size.
        num_workers: DataLoader workers (in-memory tensors need none).
    """

    def __init__(
        self,
        lookback: int = 30,
        target: str = "close",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        val_start: str | None = None,
        test_start: str | None = None,
        batch_size: int = 64,
        num_workers: int = 0,
    ):
        super().__init__()
        check_range("lookback", lookback, 1)
        check_range("batch_size", batch_size, 1)
        self.lookback, self.target = lookback, target
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.val_start, self.test_start = val_start, test_start
        self.batch_size, self.num_workers = batch_size, num_workers
        self.frame: pd.DataFrame | None = None
        self.bounds: SplitBounds | None = None
        self.windows: dict[str, Windows] = {}

    # -- to implement ---------------------------------------------------------------------------------
    def load_frame(self) -> pd.DataFrame:
        """The whole series: time-ordered rows, DatetimeIndex, numeric features including `self.target`."""
        raise NotImplementedError

    @property
    def feature_names(self) -> list[str]:
        """The input columns, in the order of x's last axis (default: every column of the frame)."""
        return list(self.frame.columns)

    # -- the split ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.frame is not None:
            return
        self.frame = self.load_frame()
        n = len(self.frame)
        if self.val_start is not None and self.test_start is not None:
            self.bounds = split_by_date(self.frame.index, self.val_start, self.test_start)
        else:
            self.bounds = split_by_fraction(n, self.val_fraction, self.test_fraction)
        self.bounds.check_lookback(self.lookback)
        features = self.frame[self.feature_names].to_numpy(np.float32)
        targets = self.frame[self.target].to_numpy(np.float32)
        self.windows = {s: make_windows(features, targets, self.bounds.part(s), self.lookback) for s in SPLITS}

    def train_rows(self) -> np.ndarray:
        """The feature rows of the train split only: what a scaler may be fitted on."""
        return self.frame[self.feature_names].to_numpy(np.float64)[self.bounds.train]

    def target_times(self, split: str) -> pd.DatetimeIndex:
        """Timestamps of the split's targets, aligned with its windows."""
        return self.frame.index[self.windows[split].index]

    # -- loaders --------------------------------------------------------------------------------------
    def _dataset(self, split: str) -> TensorDataset:
        w = self.windows[split]
        return TensorDataset(torch.from_numpy(w.x), torch.from_numpy(w.y), torch.from_numpy(w.prev))

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        # training shuffles windows (SplitDataLoaders): safe, each window is self-contained
        return DataLoader(
            self._dataset(split), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

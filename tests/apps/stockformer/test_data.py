"""Stockformer's data module: rolling folds, windows that never straddle splits, train-only statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from apps.stockformer.data import StockformerDataModule, correlation_embedding, fold_bounds
from common.errors import ConfigError, DatasetError

KW = dict(window=10, horizon=3, train_days=60, val_days=30, test_days=30, batch_size=8)


def _dm(path, **kw) -> StockformerDataModule:
    dm = StockformerDataModule(source="real", root=str(path), **{**KW, **kw})
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_rolling_folds_tile_the_history():
    # 200 dates, folds of 100 + 20 + 20 shifted by 20: 4 folds, the last (-1) ending on the last date
    folds = [fold_bounds(200, 100, 20, 20, k) for k in range(4)]
    assert [offset for offset, _ in folds] == [0, 20, 40, 60]
    assert [fold_bounds(200, 100, 20, 20, k)[0] for k in range(-4, 0)] == [0, 20, 40, 60]
    tests = [(o + s.part("test").start, o + s.part("test").stop) for o, s in folds]
    assert tests[-1][1] == 200 and all(b[0] == a[1] for a, b in zip(tests, tests[1:]))  # tiled, no overlap
    with pytest.raises(ValueError, match="outside"):
        fold_bounds(200, 100, 20, 20, 4)


def test_windows_never_straddle_splits(panel_csv):
    dm = _dm(panel_csv)
    assert dm.model_kwargs()["num_factors"] == 19  # price + volume factors: the CSV has OHLCV
    seen = {}
    for split in ("train", "val", "test"):
        start, stop = dm.bounds[split]
        ds = dm.dataset(split)
        assert len(ds) == (stop - start) - KW["window"] - KW["horizon"] + 1
        for i in range(len(ds)):
            t = int(ds[i]["index"])
            assert start <= t - KW["window"] + 1 and t + KW["horizon"] < stop  # inputs and targets inside
        seen[split] = (start, stop)
    assert seen["train"][1] == seen["val"][0] and seen["val"][1] == seen["test"][0]
    sample = dm.dataset("test")[0]
    t = int(sample["index"])
    torch.testing.assert_close(sample["target"], dm.arrays["returns"][t + 1 : t + 4])
    torch.testing.assert_close(sample["returns"], dm.arrays["returns"][t - 9 : t + 1])


def test_statistics_come_from_train_only(panel_csv, tmp_path):
    dm = _dm(panel_csv)
    stats = dm.train_statistics()
    frame = pd.read_csv(panel_csv)
    dates = sorted(frame["date"].unique())
    after_train = dates[len(dates) - 60 :]  # the val and test dates of the last fold
    changed = frame.copy()
    scale = changed["date"].isin(after_train)
    for col in ("open", "high", "low", "close"):
        changed.loc[scale, col] *= np.where(changed.loc[scale, "ticker"] == "AAA", 3.0, 0.5)
    changed.loc[scale, "volume"] *= 10
    path = tmp_path / "changed.csv"
    changed.to_csv(path, index=False)
    other = _dm(path).train_statistics()
    for key in stats:
        torch.testing.assert_close(stats[key], other[key])
    assert stats["stock_graph"].shape == (4, 4)  # graph_dim 8 capped at the 4 stocks


def test_correlation_embedding_reproduces_correlations():
    r = np.random.default_rng(0).normal(size=(500, 5))
    r[:, 1] += r[:, 0]
    emb = correlation_embedding(r, 5)  # full rank: E E^T is the correlation matrix
    np.testing.assert_allclose(emb @ emb.T, np.corrcoef(r, rowvar=False), atol=1e-5)


def test_errors(tmp_path, panel_csv):
    with pytest.raises(DatasetError, match="file not found"):
        _dm(tmp_path / "missing.csv")
    with pytest.raises(DatasetError, match="fewer than train"):
        _dm(panel_csv, train_days=400)
    with pytest.raises(ConfigError, match="root"):
        StockformerDataModule(source="real", root=None)
    with pytest.raises(ConfigError, match="factors"):
        StockformerDataModule(factors="alpha360")

"""Stockformer's data: a stock panel -> factors -> rolling, strictly chronological train/val/test windows.

Sources: `source=embedded` (default) is skfolio's S&P 500 panel (20 stocks, daily closes 1990-2022,
`data_cards/sp500_skfolio.md`); `source=real` reads a long-format OHLCV CSV at `root` (a file, or a folder
holding `panel.csv`; `data_cards/stock_panel_csv.md`). Factors (apps/stockformer/factors.py) are computed
causally over the whole panel; the first 252 dates (the longest look-back) are dropped.

Splits follow the paper's rolling sub-datasets: a fold is `train_days` + `val_days` + `test_days`
consecutive trading days (the paper: 2 years / 4 months / 4 months, 14 folds); consecutive folds are shifted
by `test_days`, so their test periods tile the history. `fold=-1` (default) is the last fold, ending on the
panel's last date; `fold=k >= 0` counts from the earliest. A sample is the window of inputs t-T1+1..t and
targets t+1..t+T2 (T1 = `window`, T2 = `horizon`); a sample belongs to a split only if *all* of its input
and target days lie inside it, so no window straddles two splits. Factor scaling statistics, the return
scale and the stock correlation graph are computed from the train split's dates only.

Batches are dicts: `returns [B, T1, N]`, `factors [B, T1, N, F]` (raw), `day_of_week [B, T1 + T2]`,
`target [B, T2, N]` (simple daily returns), `momentum [B, N]` (12-1 momentum at t: the baseline's score)
and `index [B]` (t, a row of the fold's date axis).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from apps.stockformer.factors import MOMENTUM, WARMUP, compute_factors, daily_returns, factor_names
from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.errors import ConfigError, DatasetError, check_choice, check_range
from common.timeseries.panel import CSV_EXPECTED, Panel, read_panel_csv, read_sp500_skfolio, skfolio_sp500_path
from common.timeseries.splits import SplitBounds

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")


# ---- the panel on disk ---------------------------------------------------------------------------
def build_sp500(out: Path) -> None:
    panel = read_sp500_skfolio(skfolio_sp500_path())
    np.savez_compressed(
        out / "panel.npz",
        dates=panel.dates.strftime("%Y-%m-%d").to_numpy().astype("U10"),
        tickers=np.array(panel.tickers, dtype="U16"),
        close=panel.close,
    )


def load_npz_panel(folder: Path) -> Panel:
    path = folder / "panel.npz"
    expected = "panel.npz with dates, tickers, close (rebuilt by deleting the folder)"
    try:
        with np.load(path, allow_pickle=False) as f:
            dates, tickers, close = f["dates"], f["tickers"], f["close"]
    except Exception as e:  # noqa: BLE001
        raise DatasetError(path, expected, card="sp500_skfolio", problem=f"cannot read cached panel ({e})") from e
    return Panel(pd.DatetimeIndex(pd.to_datetime(dates)), [str(t) for t in tickers], {"close": close})


def correlation_embedding(returns: np.ndarray, dim: int) -> np.ndarray:
    """Spectral embedding [N, dim] of the return-correlation graph: top eigenvectors * sqrt(eigenvalue).

    Stands in for the paper's Struc2vec embedding of the same graph. Signs are fixed (largest entry
    positive) so the embedding is a deterministic function of the returns.
    """
    corr = np.nan_to_num(np.corrcoef(returns, rowvar=False))
    values, vectors = np.linalg.eigh(corr)
    order = np.argsort(values)[::-1][:dim]
    vectors = vectors[:, order] * np.sqrt(np.clip(values[order], 0.0, None))
    signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])])
    return (vectors * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def fold_bounds(num_dates: int, train: int, val: int, test: int, fold: int) -> tuple[int, SplitBounds]:
    """First row of rolling fold `fold` (negative: from the latest) and its chronological split inside it."""
    total = train + val + test
    num_folds = (num_dates - total) // test + 1 if num_dates >= total else 0
    if num_folds <= 0:
        raise ValueError(f"{num_dates} usable dates are fewer than train+val+test = {total}")
    if not -num_folds <= fold < num_folds:
        raise ValueError(f"fold={fold} is outside the {num_folds} rolling folds of this panel")
    stop = num_dates - (num_folds - 1 - fold % num_folds) * test
    return stop - total, SplitBounds(train, train + val, total)


def sample_rows(bounds: tuple[int, int], window: int, horizon: int) -> np.ndarray:
    """Window ends t whose inputs t-window+1..t and targets t+1..t+horizon all lie inside [start, stop)."""
    start, stop = bounds
    return np.arange(start + window - 1, stop - horizon)


class PanelWindows(Dataset):
    def __init__(self, arrays: dict, rows: np.ndarray, window: int, horizon: int):
        self.a, self.rows, self.window, self.horizon = arrays, torch.as_tensor(rows), window, horizon

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        t = int(self.rows[i])
        past, future = slice(t - self.window + 1, t + 1), slice(t + 1, t + 1 + self.horizon)
        return {
            "returns": self.a["returns"][past],
            "factors": self.a["factors"][past],
            "day_of_week": self.a["day_of_week"][t - self.window + 1 : t + 1 + self.horizon],
            "target": self.a["returns"][future],
            "momentum": self.a["momentum"][t],
            "index": torch.tensor(t),
        }


class StockformerDataModule(DataCardMixin, SplitDataLoaders, L.LightningDataModule):
    DATASETS = {"sp500_skfolio": "sp500_skfolio", "stock_panel_csv": "stock_panel_csv"}

    def __init__(
        self,
        source: str = "embedded",
        dataset: str = "sp500_skfolio",
        root: str | None = None,
        data_dir: str = "data/stockformer",
        window: int = 20,
        horizon: int = 2,
        train_days: int = 504,
        val_days: int = 84,
        test_days: int = 84,
        fold: int = -1,
        factors: str = "auto",
        graph_dim: int = 8,
        batch_size: int = 12,
        num_workers: int = 0,
    ):
        super().__init__()
        check_choice("source", source, ("embedded", "real"))
        if source == "real" and dataset == "sp500_skfolio":
            dataset = "stock_panel_csv"  # the one real layout; sp500_skfolio is only the embedded panel
        check_choice("dataset", dataset, ("sp500_skfolio",) if source == "embedded" else ("stock_panel_csv",))
        if source == "real" and not root:
            raise ConfigError("root", root, "a long-format panel CSV (or a folder holding panel.csv)")
        check_choice("factors", factors, ("auto", "price", "price_volume"))
        check_range("window", window, 2)
        check_range("horizon", horizon, 2)
        for key, value in (("train_days", train_days), ("val_days", val_days), ("test_days", test_days)):
            check_range(key, value, window + horizon + 1)
        check_range("graph_dim", graph_dim, 1)
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        if not isinstance(fold, int):
            raise ConfigError("fold", fold, "an integer (negative counts from the latest fold)")
        self.source, self.dataset_id, self.root, self.data_dir = source, dataset, root, Path(data_dir)
        self.window, self.horizon, self.fold = int(window), int(horizon), int(fold)
        self.days = {"train": int(train_days), "val": int(val_days), "test": int(test_days)}
        self.factor_set, self.graph_dim = factors, int(graph_dim)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.panel: Panel | None = None

    @property
    def dataset_name(self) -> str:
        return self.dataset_id

    def _embedded_dir(self) -> Path:
        return build_once(self.data_dir / f"sp500_skfolio_v{FORMAT_VERSION}", build_sp500)

    def _csv_path(self) -> Path:
        root = Path(self.root)
        return root / "panel.csv" if root.is_dir() else root

    def prepare_data(self) -> None:
        if self.source == "embedded":
            self._embedded_dir()

    def read_panel(self) -> Panel:
        if self.source == "embedded":
            return load_npz_panel(self._embedded_dir())
        required = ("close",) if self.factor_set != "price_volume" else ("open", "high", "low", "close", "volume")
        return read_panel_csv(self._csv_path(), required=required, card=self.card)

    def setup(self, stage: str | None = None) -> None:
        if self.panel is not None:
            return
        panel = self.read_panel()
        use_volume = panel.has_volume if self.factor_set == "auto" else self.factor_set == "price_volume"
        self.factor_names = factor_names(use_volume)
        factors = compute_factors(panel, self.factor_names)
        returns = daily_returns(panel.close)
        keep = slice(WARMUP + 1, None)  # full look-backs and a previous close on every kept date
        self.panel = panel.slice(WARMUP + 1, len(panel))
        where = self._csv_path() if self.source == "real" else skfolio_sp500_path()
        try:
            offset, split = fold_bounds(len(self.panel), *self.days.values(), self.fold)
        except ValueError as e:
            raise DatasetError(
                where,
                CSV_EXPECTED + f"; at least {WARMUP + 1} dates for the factors' look-back plus train+val+test days",
                card=self.card,
                problem=str(e),
            ) from e
        split.check_lookback(self.window + self.horizon - 1, key="window")  # every split keeps a sample
        self.bounds = {s: (offset + split.part(s).start, offset + split.part(s).stop) for s in SPLITS}
        self.arrays = {
            "returns": torch.from_numpy(returns[keep].astype(np.float32)),
            "factors": torch.from_numpy(factors[keep]),
            "day_of_week": torch.from_numpy(self.panel.dates.dayofweek.to_numpy().astype(np.int64)),
            "momentum": torch.from_numpy(factors[keep][..., self.factor_names.index(MOMENTUM)].copy()),
        }
        self.rows = {s: sample_rows(self.bounds[s], self.window, self.horizon) for s in SPLITS}

    # ---- what the model and module need ------------------------------------------------------------
    def _ready(self) -> None:
        if self.panel is None:
            raise RuntimeError("StockformerDataModule.setup() has not been called")

    def model_kwargs(self) -> dict:
        self._ready()
        return {
            "num_stocks": len(self.panel.tickers),
            "num_factors": len(self.factor_names),
            "window": self.window,
            "horizon": self.horizon,
            "graph_dim": min(self.graph_dim, len(self.panel.tickers)),
            "tickers": list(self.panel.tickers),
            "factor_names": list(self.factor_names),
        }

    def train_statistics(self) -> dict[str, torch.Tensor]:
        """Scaling statistics and the correlation graph, from the train split's dates only."""
        self._ready()
        start, stop = self.bounds["train"]
        factors = self.arrays["factors"][start:stop].reshape(-1, len(self.factor_names)).double()
        mean = factors.nanmean(dim=0)
        std = ((factors - mean) ** 2).nanmean(dim=0).sqrt().clamp_min(1e-8)
        returns = self.arrays["returns"][start:stop].numpy()
        graph = correlation_embedding(returns, min(self.graph_dim, returns.shape[1]))
        return {
            "factor_mean": mean.float(),
            "factor_std": std.float(),
            "return_scale": torch.tensor(float(returns.std())),
            "stock_graph": torch.from_numpy(graph),
        }

    def split_dates(self, split: str) -> pd.DatetimeIndex:
        start, stop = self.bounds[split]
        return self.panel.dates[start:stop]

    def dates(self, rows) -> pd.DatetimeIndex:
        return self.panel.dates[np.asarray(rows)]

    def dataset(self, split: str) -> PanelWindows:
        self._ready()
        return PanelWindows(self.arrays, self.rows[split], self.window, self.horizon)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers
        )

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

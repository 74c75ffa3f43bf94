"""Non-finite prices are refused where the panel is read (training and predict), naming file, row and column;
predict never writes NaN into its JSON (issue 20)."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import torch

from apps.stockformer.data import StockformerDataModule
from apps.stockformer.predict import predict
from common.errors import DatasetError, InputError
from common.timeseries.panel import read_sp500_skfolio
from tests.apps.stockformer.test_predict import _model

ROW = 301  # a data row (1-based, as the errors count it) in the middle of the synthetic panel


def with_value(panel_csv, tmp_path, column: str, value: str):
    """The panel CSV with `value` written verbatim into `column` on data row ROW."""
    lines = panel_csv.read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[ROW].split(",")
    cells[header.index(column)] = value
    lines[ROW] = ",".join(cells)
    path = tmp_path / f"{column}_{value}.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("column, value", [("close", "inf"), ("open", "-inf"), ("volume", "inf")])
def test_training_refuses_non_finite_values_at_setup(panel_csv, tmp_path, column, value):
    path = with_value(panel_csv, tmp_path, column, value)
    dm = StockformerDataModule(source="real", root=str(path), window=10, horizon=3, train_days=60, val_days=30,
                               test_days=30)  # fmt: skip
    with pytest.raises(DatasetError) as err:
        dm.setup("fit")
    assert err.value.path == path and err.value.card == "stock_panel_csv"
    assert f"non-finite {column} {float(value)} on data row {ROW}" in str(err.value)


def test_predict_refuses_inf_and_writes_nothing(panel_csv, tmp_path):
    path = with_value(panel_csv, tmp_path, "close", "inf")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=f"non-finite close inf on data row {ROW}") as err:
        predict(_model(), path, out, {})
    assert err.value.path == path and not out.exists()


def test_an_empty_cell_is_still_a_missing_value(panel_csv, tmp_path):
    """Missing values stay allowed: the date lacking a value is dropped for every ticker."""
    path = with_value(panel_csv, tmp_path, "close", "")
    written = predict(_model(), path, tmp_path / "out", {})
    assert json.loads(written["json"].read_text())["top_k"] == 4


def test_predict_never_writes_nan_json(panel_csv, tmp_path):
    model = _model()
    model.forward = lambda *inputs: (torch.full((1, 3, 4), float("nan")), torch.full((1, 3, 4), float("nan")))
    with pytest.raises(ValueError, match="not JSON compliant"):
        predict(model, panel_csv, tmp_path / "out", {})
    assert not (tmp_path / "out" / "prediction.json").exists()


def test_embedded_reader_refuses_inf(tmp_path):
    dates = pd.bdate_range("2020-01-01", periods=4).strftime("%Y-%m-%d")
    wide = pd.DataFrame({"Date": dates, "AAA": [1.0, 2.0, np.inf, 3.0], "BBB": [1.0, 2.0, 3.0, 4.0]})
    path = tmp_path / "sp500_dataset.csv.gz"
    with gzip.open(path, "wt") as f:
        wide.to_csv(f, index=False)
    with pytest.raises(DatasetError, match="non-finite close of AAA on 2020-01-03") as err:
        read_sp500_skfolio(path)
    assert err.value.card == "sp500_skfolio"

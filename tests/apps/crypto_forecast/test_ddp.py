"""Forecast metrics under DDP: the test windows scored by 2 processes (ddp_cpu's trainer, fork launcher; see
tests/common/pipeline/test_ddp_metrics.py) are those of 1 process, each window once."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from apps.crypto_forecast.data import CryptoDataModule
from apps.crypto_forecast.model import CryptoForecaster
from apps.crypto_forecast.module import CryptoForecastModule
from tests.apps.crypto_forecast.helpers import ohlcv_frame, write_csv
from tests.common.pipeline.test_ddp_metrics import one_and_two_processes, one_thread  # noqa: F401 (fixture)


def test_forecast_metrics_of_two_processes_are_those_of_one(tmp_path):
    L.seed_everything(0, verbose=False)
    csv = write_csv(tmp_path / "ohlcv.csv", ohlcv_frame(307))
    data = CryptoDataModule(root=str(csv), data_dir=str(tmp_path), lookback=20, batch_size=8)
    data.prepare_data()
    data.setup("fit")
    n = len(data.windows["test"].y)
    assert n % 2 == 1  # rank 1 gets a repeat of the first window
    model = CryptoForecaster(arch="performer_bilstm", dim=8, lstm_hidden=8, **data.model_kwargs())
    module = CryptoForecastModule(model, optimizer=partial(torch.optim.AdamW, lr=1e-3))
    one, two = one_and_two_processes(module, lambda t, m: t.test(m, datamodule=data, verbose=False)[0])
    assert one.keys() == two.keys() and "test/dir_acc" in one
    # The same windows through the same weights, batched differently: float32 forecasts equal to rounding (1e-6
    # of a ~100 USD price); every metric is then a float64 reduction of them. Relative 1e-5 leaves room for
    # that rounding and no room for one window counted twice (1/n of a metric, n ~ 20).
    for key in one:
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-7), key

"""Learning beyond the naive forecast where there is something to learn: on a synthetic series whose daily
returns are predictable (a strong sine cycle of period 10 plus a little noise), the paper's model, trained as
`make train` would, beats the naive last-value forecast on the test period by a wide margin."""

from __future__ import annotations

from functools import partial

import lightning as L
import numpy as np
import pandas as pd
import torch

from apps.crypto_forecast.data import CryptoDataModule
from apps.crypto_forecast.model import CryptoForecaster
from apps.crypto_forecast.module import CryptoForecastModule
from tests.apps.crypto_forecast.helpers import write_csv


def _cyclic_series(n=700, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    returns = 0.03 * np.sin(2 * np.pi * t / 10) + rng.normal(0, 0.003, n)
    close = 100 * np.exp(np.cumsum(returns))
    return pd.DataFrame(
        {
            "date": pd.date_range("2020-01-01", periods=n, freq="D").strftime("%Y-%m-%d"),
            "open": np.r_[close[0], close[:-1]],
            "high": close * 1.002,
            "low": close * 0.998,
            "close": close,
            "volume": rng.uniform(10, 20, n),
        }
    )


def test_performer_bilstm_beats_naive_on_a_predictable_series(tmp_path):
    L.seed_everything(0)
    csv = write_csv(tmp_path / "cyclic.csv", _cyclic_series())
    data = CryptoDataModule(root=str(csv), data_dir=str(tmp_path), lookback=20, batch_size=32)
    data.prepare_data()
    data.setup("fit")
    model = CryptoForecaster(arch="performer_bilstm", dim=16, lstm_hidden=16, **data.model_kwargs())
    module = CryptoForecastModule(model, optimizer=partial(torch.optim.AdamW, lr=3e-3))
    trainer = L.Trainer(
        max_epochs=15,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, datamodule=data)
    test = trainer.test(module, datamodule=data, verbose=False)[0]
    # The naive forecast's error is the whole daily move (RMS 0.021 in log return); a forecaster that knows the
    # cycle is left with the noise (0.003), RMSE ratio 0.14. Measured 0.147 (seed 0); 0.5 asks that the model
    # remove three quarters of the squared error that naive leaves, a loose but real "learned the cycle".
    assert test["test/rmse"] < 0.5 * test["test/naive_rmse"], test
    # Direction: the cycle is 0 at t = 0 and 5 mod 10, where the noise decides (a coin flip), and at least 0.018
    # elsewhere, six noise sigmas: the best possible accuracy is 0.8 + 0.2 / 2 = 0.9 (measured 0.90). The ~80 test
    # windows hold ~16 coin flips (std 0.025 of the accuracy), so 0.8 is 4 std below the best possible.
    assert test["test/dir_acc"] > 0.8, test

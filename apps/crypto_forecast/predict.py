"""`make predict app=crypto_forecast input=FILE.csv`: forecast the close one step after a user's OHLCV file.

The file needs columns date, open, high, low, close, volume (apps/crypto_forecast/ohlcv.py) and at least the
indicators' warm-up plus `lookback` rows. Writes `prediction.json` (the next close and its date, plus the
model's one-step forecasts over the file scored against what happened and against the naive forecast),
`forecasts.csv` and `prediction.png`. Runs from the export folder alone: the scaler is inside the model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apps.crypto_forecast.ohlcv import EXPECTED, OhlcvProblem, read_ohlcv
from common.errors import InputError
from common.timeseries.indicators import INDICATORS, add_indicators, warmup_rows
from common.timeseries.metrics import regression_metrics
from common.timeseries.plots import plot_forecast

HISTORY_SHOWN = 200  # rows of the file drawn before the forecast


def indicators_for(feature_names: list[str], frame: pd.DataFrame) -> tuple[str, ...]:
    """The indicator groups whose columns the model reads."""
    probe = frame.iloc[:5]
    return tuple(name for name, ind in INDICATORS.items() if set(ind.compute(probe)) & set(feature_names))


def predict(model, input_path: Path, out_dir: Path, spec: dict) -> dict:
    model_spec = spec["spec"]
    names, lookback = list(model_spec["feature_names"]), int(model_spec["lookback"])
    try:
        frame = read_ohlcv(input_path)
    except OhlcvProblem as e:
        raise InputError(input_path, EXPECTED, problem=str(e)) from None
    indicators = indicators_for(names, frame)
    needed = warmup_rows(indicators) + lookback
    if len(frame) < needed:
        raise InputError(
            input_path,
            EXPECTED,
            problem=f"too few rows: {len(frame)}; the model needs {needed} "
            f"({warmup_rows(indicators)} indicator warm-up rows + lookback {lookback})",
        )
    features = add_indicators(frame, indicators)
    values = torch.from_numpy(features[names].to_numpy(np.float32))
    windows = values.unfold(0, lookback, 1).transpose(1, 2)  # [rows-lookback+1, lookback, F]; the last ends now
    with torch.no_grad():
        forecasts = torch.cat([model(chunk) for chunk in windows.split(1024)]).numpy().astype(np.float64)

    closes = features["close"].to_numpy(np.float64)
    times = features.index
    step = pd.Series(times).diff().median()
    next_time = times[-1] + step
    # forecasts[j] is for the row after window j, i.e. row j + lookback; the last one is the future step
    past_targets = closes[lookback:]
    past_forecasts, past_prev = forecasts[:-1], closes[lookback - 1 : -1]
    backtest = {}
    if len(past_targets) >= 2:
        backtest = regression_metrics(past_targets, past_forecasts, past_prev)
        backtest["naive_rmse"] = regression_metrics(past_targets, past_prev, past_prev)["rmse"]
        backtest["windows"] = len(past_targets)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "input": str(input_path),
        "arch": model_spec.get("arch"),
        "last_date": str(times[-1]),
        "last_close": float(closes[-1]),
        "next_date": str(next_time),
        "next_close": float(forecasts[-1]),
        "in_file_one_step_forecasts": backtest,
    }
    (out_dir / "prediction.json").write_text(json.dumps(result, indent=2) + "\n")
    table = pd.DataFrame(
        {"close": np.append(closes[lookback:], np.nan), "forecast": forecasts},
        index=pd.DatetimeIndex(list(times[lookback:]) + [next_time], name="date"),
    )
    table.to_csv(out_dir / "forecasts.csv")

    shown = slice(max(0, len(times) - HISTORY_SHOWN), len(times))
    plotted = table.iloc[-min(HISTORY_SHOWN, len(table)) :]
    plot_forecast(
        plotted.index,
        None,
        {"one-step forecast": plotted["forecast"].to_numpy(), "next close": _only_last(plotted["forecast"])},
        out_dir / "prediction.png",
        title=f"{Path(input_path).name}: next close {forecasts[-1]:,.2f} at {next_time}",
        ylabel="close",
        history=(times[shown], closes[shown]),
    )
    print(f"next close at {next_time}: {forecasts[-1]:,.4f} (last close {closes[-1]:,.4f})")
    return {
        "prediction": out_dir / "prediction.json",
        "forecasts": out_dir / "forecasts.csv",
        "picture": out_dir / "prediction.png",
    }


def _only_last(values: pd.Series) -> np.ndarray:
    out = np.full(len(values), np.nan)
    out[-1] = values.iloc[-1]
    return out

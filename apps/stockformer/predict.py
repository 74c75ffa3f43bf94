"""Next-period stock selection from a user's panel CSV with a trained Stockformer export.

Input: a long-format CSV `date,ticker,close[,open,high,low,volume]` (volume and OHLC are required when
the model was trained with price-volume factors), holding every ticker the model knows (`spec["spec"]
["tickers"]`; others are ignored) on at least 253 + window shared dates (252 days of factor look-back, one
previous close, then the input window). The model's own buffers standardise the factors, so nothing but
the export is needed.

Output under `out_dir`: `prediction.csv` (one row per ticker: predicted return over the next `horizon`
trading days, the mean probability of an up day, the rank, whether it is a top-k pick, and each day's
predicted return), `prediction.json` (as-of date, target dates, the top-k picks) and `prediction.png`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apps.stockformer.factors import VOLUME_FACTORS, WARMUP, compute_factors, daily_returns
from apps.stockformer.plots import plot_prediction_bars
from common.errors import InputError
from common.timeseries.panel import OHLCV, read_panel_csv

TOP_K = 5  # the default config's module.top_k


def predict(model, input_path: Path, out_dir: Path, spec: dict) -> dict:
    input_path, out_dir = Path(input_path), Path(out_dir)
    tickers, names = list(model.tickers), list(model.factor_names)
    needs_volume = any(n in VOLUME_FACTORS for n in names)
    required = OHLCV if needs_volume else ("close",)
    need_rows = WARMUP + 1 + model.window
    expected = (
        f"a long-format CSV with columns date,ticker,{','.join(required)} holding the tickers {tickers} "
        f"on at least {need_rows} shared dates"
    )
    panel = read_panel_csv(input_path, required=required, user_input=True)
    missing = [t for t in tickers if t not in panel.tickers]
    if missing:
        raise InputError(input_path, expected, problem=f"the model's ticker(s) {missing} are not in the file")
    panel = panel.select(tickers)
    if len(panel) < need_rows:
        raise InputError(input_path, expected, problem=f"only {len(panel)} dates shared by all tickers")

    factors = compute_factors(panel, names)[-model.window :]
    returns = daily_returns(panel.close)[-model.window :]
    last = panel.dates[-1]
    future = pd.bdate_range(last + pd.Timedelta(days=1), periods=model.horizon)  # weekdays; holidays not known
    day_of_week = np.concatenate([panel.dates[-model.window :].dayofweek, future.dayofweek]).astype(np.int64)
    with torch.no_grad():
        pred, up = model(
            torch.from_numpy(returns[None].astype(np.float32)),
            torch.from_numpy(factors[None]),
            torch.from_numpy(day_of_week[None]),
        )
    pred, up = pred[0].numpy().astype(np.float64), up[0].numpy().astype(np.float64)  # [T2, N]
    horizon_return = pred.sum(axis=0)
    k = min(TOP_K, len(tickers))
    order = np.argsort(-horizon_return, kind="stable")
    picks = [tickers[i] for i in order[:k]]

    table = pd.DataFrame(
        {
            "ticker": tickers,
            "predicted_return": horizon_return,
            "up_probability": up.mean(axis=0),
            "rank": np.argsort(order) + 1,
            "top_k_pick": [t in picks for t in tickers],
            **{f"predicted_return_{d.date()}": pred[i] for i, d in enumerate(future)},
        }
    ).sort_values("rank")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {name: out_dir / f"prediction.{ext}" for name, ext in (("csv", "csv"), ("json", "json"), ("plot", "png"))}
    table.to_csv(written["csv"], index=False, float_format="%.6g")
    summary = {
        "as_of": str(last.date()),
        "target_dates": [str(d.date()) for d in future],
        "top_k": k,
        "picks": picks,
        "predictions": {
            t: {"predicted_return": float(horizon_return[i]), "up_probability": float(up[:, i].mean())}
            for i, t in enumerate(tickers)
        },
    }
    written["json"].write_text(json.dumps(summary, indent=1, allow_nan=False) + "\n")  # NaN is not JSON: fail instead
    plot_prediction_bars(tickers, horizon_return, up.mean(axis=0), set(picks), written["plot"])
    print(f"as of {last.date()}, top-{k} for the next {model.horizon} trading days: {', '.join(picks)}")
    return written

"""predict(): a user's OHLCV panel CSV -> next-period predictions and top-k picks; clear InputErrors."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from apps.stockformer.factors import factor_names
from apps.stockformer.model import Stockformer
from apps.stockformer.predict import predict
from common.errors import InputError


def _model() -> Stockformer:
    names = factor_names(True)
    return Stockformer(
        num_stocks=4,
        num_factors=len(names),
        window=10,
        horizon=3,
        dim=8,
        depth=1,
        graph_dim=2,
        tickers=["AAA", "BBB", "CCC", "DDD"],
        factor_names=names,
    ).eval()


def test_predict_writes_csv_json_plot(panel_csv, tmp_path):
    written = predict(_model(), panel_csv, tmp_path / "out", {})
    assert set(written) == {"csv", "json", "plot"} and all(p.is_file() for p in written.values())
    table = pd.read_csv(written["csv"])
    assert list(table["rank"]) == [1, 2, 3, 4] and table["top_k_pick"].all()  # 4 tickers < top-5: all picked
    assert table["predicted_return"].is_monotonic_decreasing
    summary = json.loads(written["json"].read_text())
    assert len(summary["target_dates"]) == 3 and pd.Timestamp(summary["target_dates"][0]) > pd.Timestamp(
        summary["as_of"]
    )


def test_predict_errors(panel_csv, tmp_path):
    frame = pd.read_csv(panel_csv)
    frame[frame["ticker"] != "DDD"].to_csv(tmp_path / "three.csv", index=False)
    with pytest.raises(InputError, match=r"ticker\(s\) \['DDD'\] are not in the file"):
        predict(_model(), tmp_path / "three.csv", tmp_path / "out", {})
    frame.drop(columns=["volume"]).to_csv(tmp_path / "novolume.csv", index=False)
    with pytest.raises(InputError, match=r"missing column\(s\) \['volume'\]"):
        predict(_model(), tmp_path / "novolume.csv", tmp_path / "out", {})
    frame[frame["date"] >= sorted(frame["date"].unique())[-200]].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(InputError, match="only 200 dates"):
        predict(_model(), tmp_path / "short.csv", tmp_path / "out", {})
    (tmp_path / "junk.csv").write_bytes(b"\x00\x01not a csv")
    with pytest.raises(InputError):
        predict(_model(), tmp_path / "junk.csv", tmp_path / "out", {})

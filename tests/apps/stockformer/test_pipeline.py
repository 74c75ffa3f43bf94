"""Stockformer through the real Hydra CLI with tiny limits: train on the embedded S&P 500 panel (a short
fold) -> run folder with the backtest plots -> eval -> export (ONNX checked by onnxruntime) -> load ->
predict on a panel CSV; and a bad predict file gives a clean InputError (exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from common.errors import DatasetError
from common.pipeline.export import load
from common.timeseries.panel import read_sp500_skfolio, skfolio_sp500_path, to_long_frame
from tests.conftest import run_cli, side_by_side

try:
    skfolio_sp500_path()
    HAVE_SKFOLIO = True
except DatasetError:
    HAVE_SKFOLIO = False

pytestmark = [
    pytest.mark.skipif(not HAVE_SKFOLIO, reason="skfolio wheel (embedded S&P 500 panel) not installed"),
]

TINY = [
    "app=stockformer",
    "data.train_days=96",
    "data.val_days=40",
    "data.test_days=40",
    "data.batch_size=32",
    "model.dim=8",
    "model.depth=1",
    "max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


def test_train_eval_export_predict(tmp_path):
    run_cli("train", *TINY, root=tmp_path)
    run = (tmp_path / "runs" / "stockformer" / "latest").resolve()
    for rel in ("checkpoints/best.ckpt", "plots/equity_curves.png", "plots/predicted_vs_realised.png"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "sp500_skfolio" and metrics["steps"] == 3  # 96 - 20 - 5 + 1 = 72 samples / 32
    want = {"ic", "rank_ic", "mae", "rmse", "acc", "ann_return", "sharpe", "max_drawdown"}
    want |= {"sharpe_equal_weight", "sharpe_momentum", "ann_return_equal_weight", "max_drawdown_momentum"}
    assert want <= set(metrics["test"]) and {"ic", "rank_ic", "acc", "sharpe"} <= set(metrics["val"])
    assert -1 <= metrics["test"]["ic"] <= 1 and 0 <= metrics["test"]["acc"] <= 1

    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", "app=stockformer", root=tmp_path),
        lambda: run_cli("export", "app=stockformer", root=tmp_path),
    )
    assert "test:" in proc.stdout

    export_dir = tmp_path / "exports" / "stockformer"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]
    assert info["data_card"] == "sp500_skfolio" and len(info["spec"]["tickers"]) == 20

    model = load(export_dir)
    assert float(model.return_scale) != 1.0  # the train statistics travelled with the weights
    import onnxruntime as ort

    returns, factors, dow = model.example_inputs()
    feeds = {"returns": returns[:1].numpy(), "factors": factors[:1].numpy(), "day_of_week": dow[:1].numpy()}
    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(None, feeds)  # batch 1: dynamic batch dim
    with torch.no_grad():
        want_pred, want_up = model(returns[:1], factors[:1], dow[:1])
    np.testing.assert_allclose(got[0], want_pred.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got[1], want_up.numpy(), rtol=1e-4, atol=1e-5)

    panel = read_sp500_skfolio()
    csv, short = tmp_path / "panel.csv", tmp_path / "short.csv"
    to_long_frame(panel.slice(len(panel) - 300, len(panel))).to_csv(csv, index=False)
    to_long_frame(panel.slice(len(panel) - 100, len(panel))).to_csv(short, index=False)
    out = tmp_path / "pred"
    export = f"export_dir={export_dir}"
    proc, short_proc = side_by_side(  # a good file and a too short one, each predicted in its own root
        lambda: run_cli("predict", "app=stockformer", f"input={csv}", export, f"out={out}", root=tmp_path),
        lambda: run_cli("predict", "app=stockformer", f"input={short}", export, root=tmp_path / "b", check=False),
    )
    assert "top-5" in proc.stdout
    table = pd.read_csv(out / "prediction.csv")
    assert len(table) == 20 and table["top_k_pick"].sum() == 5 and table["up_probability"].between(0, 1).all()
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["as_of"] == "2022-12-28" and len(summary["picks"]) == 5 and (out / "prediction.png").is_file()
    assert short_proc.returncode == 2
    assert "only 100 dates shared by all tickers" in short_proc.stdout + short_proc.stderr

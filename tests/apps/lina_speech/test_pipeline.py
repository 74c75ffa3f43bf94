"""Lina-Speech through the real Hydra CLI with tiny sizes on a token table (`data.source=tokens`): train -> run
folder and metrics with the unigram baseline; (slow) evaluate -> export (the one-step decoder as ONNX, checked by
onnxruntime at two sizes) -> load."""

from __future__ import annotations

import json

import pytest

from common.pipeline.export import load
from tests.apps.lina_speech.conftest import synthetic_table
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=lina_speech",
    "data.source=tokens",
    "data.batch_size=16",
    "model.dim=32",
    "model.n_layer=1",
    "model.text_layers=1",
    "model.d_blind=16",
    "max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


def _train(root):
    (root / "table").mkdir()
    run_cli("train", *TINY, f"data.root={synthetic_table(root / 'table')}", root=root)
    return (root / "runs" / "lina_speech" / "latest").resolve()


def test_train(tmp_path):
    run = _train(tmp_path)
    assert (run / "checkpoints" / "best.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "codec_tokens" and metrics["steps"] == 5  # 72 training utterances / 16
    assert {"loss", "acc", "top10", "unigram_loss", "unigram_acc"} <= set(metrics["test"])


@pytest.mark.slow
def test_evaluate_export_load(tmp_path):
    _train(tmp_path)
    proc, _ = side_by_side(
        lambda: run_cli("evaluate", "app=lina_speech", root=tmp_path),
        lambda: run_cli("export", "app=lina_speech", root=tmp_path),
    )
    assert "test:" in proc.stdout
    export_dir = tmp_path / "exports" / "lina_speech"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx" and len(info["graph"]["checked_on"]) == 2, info["graph"]
    model = load(export_dir)
    assert model.arch == "gla" and model.n_q == 2 and model.codec_dir is None

"""Relation-DETR through the real Hydra config on a tiny generated shapes set: train a few steps -> run
folder -> eval -> export (ONNX checked by onnxruntime) -> load -> predict on a png; and the ablation switch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.pipeline.export import load
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=relation_detr",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=4",
    "data.scales=[64]",
    "data.crop_scales=null",
    "data.eval_size=64",
    "data.max_size=64",
    "model.hidden_dim=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "model.num_encoder_layers=1",
    "model.num_decoder_layers=2",
    "model.num_queries=10",
    "model.num_dn_queries=8",
    "model.num_hybrid_queries=12",
    "max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


@pytest.mark.slow
def test_train_eval_export_predict(tmp_path):
    run_cli("train", *TINY, root=tmp_path)
    run = (tmp_path / "runs" / "relation_detr" / "latest").resolve()
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "detection_shapes" and metrics["steps"] == 4
    assert {"map", "map_50", "map_75"} <= set(metrics["test"])
    header = (run / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_hybrid" in header  # the one-to-many branch trained

    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", "app=relation_detr", *TINY[1:9], root=tmp_path),
        lambda: run_cli("export", "app=relation_detr", root=tmp_path),
    )
    assert "test:" in proc.stdout

    export_dir = tmp_path / "exports" / "relation_detr"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]  # the relation bias exports (explicit attention)
    model = load(export_dir)
    assert model.hybrid_selection is not None and not model.training  # built, but never run in eval
    import onnxruntime as ort

    x = torch.randn(1, 3, 64, 64)
    session = ort.InferenceSession(str(export_dir / "model.onnx"))
    logits, boxes = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref_logits, ref_boxes = model(x)
    np.testing.assert_allclose(logits, ref_logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-4)

    picture = tmp_path / "shapes.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(picture)
    out = tmp_path / "pred"
    run_cli("predict", "app=relation_detr", f"input={picture}", f"export_dir={export_dir}", f"out={out}", root=tmp_path)
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["image_size"] == [120, 90] and (out / "predictions.png").is_file()


@pytest.mark.slow
def test_ablation_switch_builds_the_same_model_without_relation(tmp_path):
    run_cli("train", *TINY, "model.use_relation=false", "test=false", root=tmp_path)
    run = (tmp_path / "runs" / "relation_detr" / "latest").resolve()
    config = (run / "config.yaml").read_text()
    assert "use_relation: false" in config

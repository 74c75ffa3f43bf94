"""Focus-DETR through the real Hydra config: train a few steps on a tiny generated shapes set -> eval ->
export (ONNX checked by onnxruntime) -> load -> predict on a png. The DETR apps' one smoke test in `make test`
(relation_detr's, the same pipeline path, is marked slow)."""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from common.pipeline.export import load
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=focus_detr",
    "data.num_train=16",
    "data.num_val=8",
    "data.num_test=8",
    "data.batch_size=8",
    "max_epochs=1",
    "model.hidden_dim=32",
    "model.num_heads=4",
    "model.ffn_dim=64",
    "model.num_encoder_layers=2",
    "model.cascade=[1.0,0.5]",
    "model.num_decoder_layers=2",
    "model.num_queries=20",
    "model.num_attn_tokens=16",
    # two feature levels (strides 16, 32) instead of four: the graph that export's torch.export, its
    # decompositions and the ONNX optimiser walk op by op is about half as large (export ~40 s -> ~20 s);
    # the criterion then takes one max(l, t, r, b) range per level, the config's four merged pairwise
    "model.out_indices=[3,4]",
    "model.num_levels=2",
    "module.criterion.size_ranges=[[-1,24],[24,1e9]]",
    "callbacks.progress_bar=null",
]


def test_train_eval_export_predict(tmp_path):
    data = [f"data.data_dir={tmp_path / 'data'}"]
    run_cli("train", *TINY, *data, "trainer=cpu", root=tmp_path)
    run = (tmp_path / "runs" / "focus_detr" / "latest").resolve()
    for rel in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/detections.png"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "detection_shapes" and metrics["steps"] == 2
    assert set(metrics["test"]) >= {"map", "map_50", "map_75"}
    assert 0.0 <= metrics["test"]["map"] <= metrics["test"]["map_50"] <= 1.0

    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", *TINY[:1], *data, root=tmp_path),
        lambda: run_cli("export", "app=focus_detr", root=tmp_path),
    )
    assert "test:" in proc.stdout

    export_dir = tmp_path / "exports" / "focus_detr"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]  # top-k, gather, scatter and grid_sample export
    assert info["spec"]["classes"][0] == "circle"

    model = load(export_dir)
    import onnxruntime as ort

    x = torch.randn(3, 3, 128, 128)  # batch 3: the batch dim is dynamic in the graph
    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=1e-3, atol=1e-4)

    picture = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((90, 140, 3)) * 255).astype(np.uint8)).save(picture)
    out = tmp_path / "pred"
    run_cli("predict", "app=focus_detr", f"input={picture}", f"export_dir={export_dir}", f"out={out}", root=tmp_path)
    pred = json.loads((out / "predictions.json").read_text())
    assert pred["image_size"] == [140, 90]
    assert {d["class"] for d in pred["detections"]} <= set(info["spec"]["classes"])
    assert (out / "predictions.png").is_file()

"""FMViT through the real Hydra config: train a few steps on a Fashion-MNIST subset -> eval -> export (the
deploy form: folded weights, `deploy: true` in model.yaml, ONNX checked by onnxruntime) -> load -> predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from apps.fmvit.model import create
from common.pipeline.export import load
from common.pipeline.safety import load_checkpoint
from common.vision.data import FASHION_MNIST_PACKAGE
from tests.conftest import run_cli, side_by_side

pytestmark = pytest.mark.skipif(not FASHION_MNIST_PACKAGE.is_dir(), reason="dataset-fashion-mnist not installed")

TINY = [
    "app=fmvit",
    "trainer=cpu",
    "data.limit_train=128",
    "data.limit_eval=64",
    "data.batch_size=32",
    "max_epochs=1",
    "callbacks.progress_bar=null",
]


def test_train_eval_export_predict(tmp_path):
    data_dir = tmp_path / "data"
    run_cli("train", *TINY, f"data.data_dir={data_dir}", root=tmp_path)
    run = (tmp_path / "runs" / "fmvit" / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["app"] == "fmvit" and metrics["dataset"] == "fashion_mnist" and metrics["steps"] == 4
    assert 0.0 <= metrics["test"]["acc"] <= metrics["test"]["acc_top5"] <= 1.0

    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", "app=fmvit", f"data.data_dir={data_dir}", root=tmp_path),
        lambda: run_cli("export", "app=fmvit", root=tmp_path),
    )
    assert "test:" in proc.stdout

    export_dir = tmp_path / "exports" / "fmvit"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]
    assert info["graph"]["max_abs_diff"] < 1e-4
    assert yaml.safe_load((export_dir / "model.yaml").read_text())["deploy"] is True

    # the export is the deploy form of the checkpoint: same function as the training form in eval mode
    model = load(export_dir)
    assert model.net.deploy and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.net.stages.modules())
    ckpt = load_checkpoint(run / "checkpoints" / info["checkpoint"].rsplit("/", 1)[-1])
    train_form = create("cpu", num_classes=10, in_chans=1, img_size=28).eval()
    train_form.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    with torch.no_grad():
        assert (model(x) - train_form(x)).abs().max().item() <= 1e-5

    import onnxruntime as ort

    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)

    picture = tmp_path / "shoe.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(picture)
    out = tmp_path / "pred"
    proc = run_cli("predict", "app=fmvit", f"input={picture}", f"export_dir={export_dir}", f"out={out}", root=tmp_path)
    top = json.loads((out / "prediction.json").read_text())["top"]
    assert len(top) == 5 and {t["class"] for t in top} <= set(info["spec"]["classes"])

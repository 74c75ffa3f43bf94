"""BiFormer through the real Hydra config: train a few steps on a Fashion-MNIST subset -> run folder with
the routing picture -> eval -> export (ONNX checked by onnxruntime) -> load -> predict on a png; and the
distributed path (trainer=ddp_cpu)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from common.pipeline.export import load
from common.vision.data import FASHION_MNIST_PACKAGE
from tests.conftest import run_cli, side_by_side

pytestmark = pytest.mark.skipif(not FASHION_MNIST_PACKAGE.is_dir(), reason="dataset-fashion-mnist not installed")

TINY = [
    "app=biformer",
    "data.limit_train=128",
    "data.limit_eval=64",
    "data.batch_size=32",
    "max_epochs=1",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("vision_data")  # Fashion-MNIST unpacked once for both tests


def test_train_eval_export_predict(tmp_path, data_dir):
    run_cli("train", *TINY, "trainer=cpu", f"data.data_dir={data_dir}", root=tmp_path)
    run = (tmp_path / "runs" / "biformer" / "latest").resolve()
    for rel in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/routing.png", "plots/predictions.png"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion_mnist" and metrics["steps"] == 4
    assert metrics["train_samples_per_s"] > 0  # 128 images over the training batches' time
    assert set(metrics["test"]) >= {"acc", "acc_top5", "loss"} and set(metrics["val"]) >= {"acc", "acc_top5"}
    assert 0.0 <= metrics["test"]["acc"] <= metrics["test"]["acc_top5"] <= 1.0

    proc, _ = side_by_side(  # evaluate and export each read the checkpoint on their own
        lambda: run_cli("evaluate", "app=biformer", f"data.data_dir={data_dir}", root=tmp_path),
        lambda: run_cli("export", "app=biformer", root=tmp_path),
    )
    assert "test:" in proc.stdout

    export_dir = tmp_path / "exports" / "biformer"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]  # BRA's top-k and gather export
    assert info["graph"]["max_abs_diff"] < 1e-4
    assert info["spec"]["classes"][9] == "Ankle boot" and info["data_card"] == "fashion_mnist"

    model = load(export_dir)
    import onnxruntime as ort

    x = torch.rand(3, 1, 28, 28) * 2 - 1  # batch 3: the batch dim is dynamic in the graph
    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(None, {"image": x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(x).numpy(), rtol=1e-4, atol=1e-5)

    picture = tmp_path / "shoe.png"
    Image.fromarray(np.zeros((56, 40, 3), np.uint8)).save(picture)  # RGB and another size: converted, resized
    out = tmp_path / "pred"
    proc = run_cli(
        "predict", "app=biformer", f"input={picture}", f"export_dir={export_dir}", f"out={out}", root=tmp_path
    )
    assert "top-5" in proc.stdout
    top = json.loads((out / "prediction.json").read_text())["top"]
    assert len(top) == 5 and {t["class"] for t in top} <= set(info["spec"]["classes"])
    assert (out / "prediction.png").is_file()


def test_ddp_cpu_two_processes(tmp_path, data_dir):
    proc = run_cli("train", *TINY, "trainer=ddp_cpu", f"data.data_dir={data_dir}", root=tmp_path)
    runs = list((tmp_path / "runs" / "biformer").glob("2*/metrics.json"))
    assert len(runs) == 1  # rank 0 alone writes the run folder's metrics
    metrics = json.loads(runs[0].read_text())
    assert metrics["steps"] == 2  # 128 images over 2 ranks x 32 per batch
    assert set(metrics["test"]) >= {"acc", "acc_top5"}
    assert sorted(p.name for p in (runs[0].parent / "checkpoints").glob("*.ckpt")) == ["best.ckpt", "last.ckpt"]
    assert proc.stdout.count("run folder:") == 1


def test_bad_model_value_names_its_key():
    from omegaconf import OmegaConf

    from common.errors import ConfigError
    from common.pipeline.build import build_model

    cfg = OmegaConf.create(
        {"_target_": "apps.biformer.model.create", "variant": "huge", "num_classes": 10, "in_chans": 1, "img_size": 28}
    )
    with pytest.raises(ConfigError, match=r"model\.variant='huge'"):
        build_model(cfg)

"""BiViT's three-run recipe through the real Hydra configs on a tiny Fashion-MNIST subset:
full precision -> binary attention (init + distillation) -> all binary (resumed once), then export
(ONNX checked by onnxruntime), load and predict (the reported top-5 is the softmax of the export's logits); a
missing init checkpoint fails clearly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from apps.bivit.binary import BinaryLinear
from apps.bivit.init import TEACHER_KEY
from common.pipeline.export import load
from common.pipeline.safety import load_checkpoint
from common.vision.data import FASHION_MNIST_PACKAGE, read_idx_split
from common.vision.predict import load_image
from tests.conftest import run_cli

SMALL = [
    "app=bivit",
    "trainer=cpu",
    "data.limit_train=256",
    "data.limit_eval=128",
    "data.batch_size=64",
    "model.embed_dim=32",
    "model.depth=2",
    "callbacks.progress_bar=null",
]


def latest(root):
    return (root / "runs" / "bivit" / "latest").resolve()


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """(root, {stage: run folder}) after the three training runs."""
    root = tmp_path_factory.mktemp("bivit")
    runs = {}
    run_cli("train", *SMALL, "max_epochs=1", root=root)
    runs["fp"] = latest(root)
    run_cli(
        "train", *SMALL, "max_epochs=1", "experiment=bivit_binary_attention",
        f"model.init_from={root}/runs/bivit/latest/checkpoints/best.ckpt", root=root,
    )  # fmt: skip
    runs["attention"] = latest(root)
    args = [*SMALL, "experiment=bivit_binary_all", f"model.init_from={runs['attention']}/checkpoints/best.ckpt"]
    run_cli("train", *args, "max_epochs=1", root=root)
    runs["all"] = latest(root)
    return root, runs, args


def test_stages_chain_their_checkpoints(stages):
    root, runs, _ = stages
    assert len(set(runs.values())) == 3
    configs = {k: yaml.safe_load((v / "config.yaml").read_text()) for k, v in runs.items()}
    assert [configs[k]["model"]["binary"] for k in runs] == ["none", "attention", "all"]
    for stage, run in runs.items():
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0 <= metrics["test"]["acc"] <= 1 and metrics["dataset"] == "fashion_mnist", stage
    fp = load_checkpoint(runs["fp"] / "checkpoints" / "last.ckpt")
    s1 = load_checkpoint(runs["attention"] / "checkpoints" / "last.ckpt")
    s2 = load_checkpoint(runs["all"] / "checkpoints" / "last.ckpt")
    assert TEACHER_KEY not in fp and "model.net.blocks.0.attn.qkv.scale" in s1["state_dict"]
    # stage 1 found the full-precision run through the `latest` link (resolved when the model was built, before
    # the link moved to stage 1 itself), and stage 2 distils from the teacher that stage 1 carried
    for teacher in (s1[TEACHER_KEY], s2[TEACHER_KEY]):
        for key, value in fp["state_dict"].items():
            torch.testing.assert_close(teacher["state_dict"][key.removeprefix("model.")], value)
    assert "train/distill" in (runs["all"] / "logs" / "csv" / "metrics.csv").read_text().splitlines()[0]


@pytest.mark.slow
def test_binary_stage_resumes_with_its_teacher(stages):
    root, runs, args = stages
    s2 = load_checkpoint(runs["all"] / "checkpoints" / "last.ckpt")
    run_cli("train", *args, "max_epochs=2", "ckpt_path=last", root=root)
    assert latest(root) == runs["all"] and json.loads((runs["all"] / "metrics.json").read_text())["epochs"] == 2
    resumed = load_checkpoint(runs["all"] / "checkpoints" / "last.ckpt")
    for key, value in s2[TEACHER_KEY]["state_dict"].items():  # restored from the checkpoint, not the init file
        torch.testing.assert_close(resumed[TEACHER_KEY]["state_dict"][key], value)


def test_export_load_predict_binary_model(stages, tmp_path):
    root, _, _ = stages
    run_cli("export", "app=bivit", root=root)
    export_dir = root / "exports" / "bivit"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]  # sign/STE and the SAB threshold export to ONNX
    model = load(export_dir)
    assert sum(isinstance(m, BinaryLinear) for m in model.modules()) == 2 * 4
    image = tmp_path / "item.png"
    Image.fromarray((np.random.default_rng(0).random((28, 28)) * 255).astype(np.uint8)).save(image)
    out = tmp_path / "pred"
    run_cli("predict", "app=bivit", f"input={image}", f"export_dir={export_dir}", f"out={out}", root=tmp_path)
    top = json.loads((out / "prediction.json").read_text())["top"]
    reported = torch.tensor([r["probability"] for r in top], dtype=torch.float64)
    # predict writes probabilities rounded to 6 decimals (each off by at most 5e-7, five by 2.5e-6), computed in
    # float32 (a softmax sums to 1 within ~1e-6): top-5 of a softmax are in [0, 1], descending, and sum to <= 1
    assert len(top) == 5 and (reported >= 0).all() and (reported.diff() <= 0).all() and reported.sum() <= 1 + 5e-6
    # and they are the top-5 of the softmax of the export's own logits for the same pixels, recomputed here: same
    # weights, same float32 ops, so equal up to the rounding (5e-7) and float32 noise (~1e-7)
    with torch.no_grad():
        probs = model(load_image(image, model.in_chans, model.img_size)).softmax(-1)[0].double()
    assert [r["index"] for r in top] == probs.topk(5).indices.tolist()
    assert [r["class"] for r in top] == [info["spec"]["classes"][r["index"]] for r in top]
    torch.testing.assert_close(reported, probs.topk(5).values, rtol=0, atol=1e-6)


def test_missing_init_checkpoint_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.ckpt"
    proc = run_cli(
        "train",
        *SMALL,
        "max_epochs=1",
        "experiment=bivit_binary_attention",
        f"model.init_from={missing}",
        root=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "model.init_from" in proc.stderr and str(missing) in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_default_training_learns(tmp_path):
    """The default (full-precision) config, one epoch on 6,000 images, classifies the 2,000 test images better than
    any model blind to the pixels could (measured 0.43 at seed 42)."""
    run_cli("train", "app=bivit", "trainer=cpu", "data.limit_train=6000", "data.limit_eval=2000", "max_epochs=1",
            "callbacks.progress_bar=null", root=tmp_path)  # fmt: skip
    metrics = json.loads(next((tmp_path / "runs" / "bivit").glob("2*/metrics.json")).read_text())
    labels = read_idx_split(FASHION_MNIST_PACKAGE, "test", "fashion_mnist")[1][:2000]  # limit_eval: the first 2,000
    # A model blind to the pixels scores, in expectation, the share of the classes it guesses: at most the majority
    # class's share (0.11 here). Its accuracy on n images exceeds its expectation by t with probability at most
    # exp(-2 n t^2) (Hoeffding): t = 0.059 for n = 2,000 and a one-in-a-million false pass.
    blind = np.bincount(labels).max() / len(labels) + math.sqrt(math.log(1e6) / (2 * len(labels)))
    assert metrics["test"]["acc"] > blind, (metrics["test"], blind)

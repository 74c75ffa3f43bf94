"""RISurConv through the real Hydra config (tiny sizes): train, test under both rotations, evaluate; export
(torch.export, with the reason ONNX was not used), load and predict (slow); bad values and missing data fail
clearly."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest
import torch

from common.pipeline.export import load
from common.pipeline.safety import load_checkpoint
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=risurconv",
    "trainer=cpu",
    "max_epochs=1",
    "data.num_points=64",
    "data.per_class={train: 2, val: 1, test: 1}",
    "data.batch_size=8",
    "model.risurconv.npoints=[32,16,8,4]",
    "model.risurconv.ks=[8,8,8,4]",
    "model.risurconv.widths=[16,16,16,16,32]",
    "model.risurconv.transformer_heads=2",
    "callbacks.progress_bar=null",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("risurconv")
    run_cli("train", *TINY, root=root)
    return root


def test_train_writes_both_protocol_columns(trained):
    run = (trained / "runs" / "risurconv" / "latest").resolve()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "procedural_shapes" and metrics["monitor"]["name"] == "val/acc"
    assert set(metrics["test"]) >= {"acc_z", "acc_so3", "class_acc_z", "class_acc_so3"}
    assert (run / "plots" / "test_so3.png").is_file()
    config = load_checkpoint(run / "checkpoints" / "last.ckpt")["manyheads"]["config"]
    assert config["model"]["num_classes"] == 13 and config["model"]["task"] == "cls"  # filled from the data


def test_bad_values_and_missing_data_fail_clearly(tmp_path):
    arch, missing = side_by_side(
        lambda: run_cli("train", *TINY, "model.arch=dgcnn", root=tmp_path / "a", check=False),
        lambda: run_cli("train", *TINY, "data.source=real", "data.dataset=modelnet40", f"data.root={tmp_path}/none",
                        root=tmp_path / "b", check=False),
    )  # fmt: skip
    assert arch.returncode == 2 and "model.arch='dgcnn'" in arch.stderr and "Traceback" not in arch.stderr
    assert missing.returncode == 2 and "data_cards/modelnet40.md" in missing.stderr and "none" in missing.stderr


@pytest.mark.slow
def test_evaluate_export_load_predict(trained, tmp_path):
    proc, _ = side_by_side(
        lambda: run_cli("evaluate", "app=risurconv", root=trained),
        lambda: run_cli("export", "app=risurconv", root=trained, timeout=1200),
    )
    assert "acc_so3" in proc.stdout
    export_dir = trained / "exports" / "risurconv"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] in ("onnx", "pt2") and (export_dir / info["graph"]["file"]).is_file()
    if info["graph"]["format"] == "pt2":
        assert info["graph"]["why_not_onnx"]
    model = load(export_dir)
    assert model(torch.rand(2, 64, 6)).shape == (2, 13)

    mesh = o3d.geometry.TriangleMesh.create_torus()
    o3d.io.write_triangle_mesh(str(tmp_path / "torus.obj"), mesh)
    out = tmp_path / "pred"
    run_cli("predict", "app=risurconv", f"input={tmp_path / 'torus.obj'}", f"export_dir={export_dir}", f"out={out}",
            root=tmp_path)  # fmt: skip
    result = json.loads((out / "prediction.json").read_text())
    assert len(result["top5"]) == 5 and np.isclose(sum(r["prob"] for r in result["top5"]), 1.0, atol=0.5)
    assert (out / "prediction.png").is_file()


@pytest.mark.slow
def test_part_segmentation_trains_through_the_config(tmp_path):
    partseg = [
        *TINY[:6],
        "data.task=partseg",
        "model.risurconv_partseg.npoints=[32,16,8,4]",
        "model.risurconv_partseg.ks=[8,8,8,4]",
        "model.risurconv_partseg.fp_ks=[8,8,8,4]",
        "callbacks.progress_bar=null",
    ]
    run_cli("train", *partseg, root=tmp_path)
    metrics = json.loads(next((tmp_path / "runs" / "risurconv").glob("2*/metrics.json")).read_text())
    assert set(metrics["test"]) >= {"miou_z", "miou_so3", "class_miou_z", "class_miou_so3", "acc_z"}

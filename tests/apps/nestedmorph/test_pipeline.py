"""NestedMorph through the real Hydra CLI with tiny limits: train on the embedded brains (32^3, two pairs) ->
run folder with metrics (identity baseline and real pairs included) and the registration pictures; the slow lane
goes on: export (ONNX with 3-D GridSample, checked by onnxruntime) -> load -> predict on a pair folder and on an
MNI-space volume, and a bad file gives a clean InputError (exit status 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from common.medical.brains import load_brain
from common.medical.volumes import save_volume
from common.pipeline.export import load
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=nestedmorph",
    "data.size=32",
    "model.dims=[8,16,32,64]",
    "model.decoder_depth=1",
    "data.train_pairs=2",
    "data.val_pairs=1",
    "data.test_pairs=1",
    "max_epochs=1",
    "callbacks.progress_bar=null",
    "trainer=cpu",
    "trainer.precision=32",  # the default's bf16 autocast costs 2.5x here; test_model covers that path
]
METRICS = {"ssim", "dice", "hd95", "sdlogj", "folding", "ssim_identity", "dice_identity", "hd95_identity"}


def _train(root, cubes_dir):
    run_cli("train", *TINY, f"data.data_dir={cubes_dir}", root=root)
    return (root / "runs" / "nestedmorph" / "latest").resolve()


def test_train_through_the_config(tmp_path, cubes_dir):
    run = _train(tmp_path, cubes_dir)
    for rel in ("checkpoints/best.ckpt", "plots/registration_synthetic.png", "plots/registration_real.png"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "embedded_brains" and metrics["steps"] == 2
    assert set(metrics["val"]) >= METRICS and METRICS | {f"{m}_real" for m in METRICS} <= set(metrics["test"])
    test = metrics["test"]
    assert 0 < test["dice_identity"] < 1 and 0 < test["dice_identity_real"] < 1 and test["folding"] < 1


@pytest.mark.slow
def test_export_load_predict(tmp_path, cubes_dir):
    run = _train(tmp_path, cubes_dir)
    run_cli("export", "app=nestedmorph", root=tmp_path)
    export_dir = tmp_path / "exports" / "nestedmorph"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]
    assert load(export_dir).size == 32 and run.is_dir()

    colin = load_brain("colin27")
    volume = tmp_path / "colin.nii.gz"
    save_volume(volume, colin.image, colin.affine)
    pair = tmp_path / "pair"
    save_volume(pair / "moving.nii.gz", colin.image[::4, ::4, ::4], np.eye(4))
    save_volume(pair / "fixed.nii.gz", np.roll(colin.image[::4, ::4, ::4], 1, axis=0), np.eye(4))
    save_volume(pair / "moving_labels.nii.gz", colin.labels[::4, ::4, ::4].astype(np.int16), np.eye(4))
    bad = tmp_path / "notes.txt"
    bad.write_text("not a volume")
    export = f"export_dir={export_dir}"
    calls = [
        lambda: run_cli(
            "predict", "app=nestedmorph", f"input={volume}", export, f"out={tmp_path / 'a'}", root=tmp_path
        ),
        lambda: run_cli("predict", "app=nestedmorph", f"input={pair}", export, f"out={tmp_path / 'b'}", root=tmp_path),
        lambda: run_cli("predict", "app=nestedmorph", f"input={bad}", export, root=tmp_path / "c", check=False),
    ]
    _, _, refused = side_by_side(*calls[:2]) + side_by_side(calls[2])
    for out in (tmp_path / "a", tmp_path / "b"):
        for name in ("warped.nii.gz", "ddf.nii.gz", "fixed.nii.gz", "registration.png", "registration.json"):
            assert (out / name).is_file(), out / name
    assert (tmp_path / "b" / "warped_labels.nii.gz").is_file()
    assert refused.returncode == 2 and "neither a folder nor a NIfTI file" in refused.stdout + refused.stderr

"""TransDAE through the real Hydra CLI with tiny limits: train on the embedded MNI152 slices (a 32 x 32 grid, a
tiny model, a few steps) -> run folder with the overlay plots -> evaluate -> export (ONNX checked by onnxruntime)
-> load -> predict a NIfTI volume (labels on the input's grid and affine) and a PNG slice (bad files:
test_predict.py)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from common.pipeline.export import load
from tests.conftest import run_cli, side_by_side

TINY = [
    "app=transdae",
    "data.img_size=32",
    "data.batch_size=8",
    "model.dims=[8,16,32]",
    "model.depths=[1,1,1]",
    "model.channel_heads=4",
    "max_epochs=1",
    "+trainer.limit_train_batches=2",
    "callbacks.progress_bar=null",
    "trainer=cpu",
]


def test_train_eval_export_predict(tmp_path):
    run_cli("train", *TINY, root=tmp_path)
    run = (tmp_path / "runs" / "transdae" / "latest").resolve()
    for rel in ("checkpoints/best.ckpt", "plots/test_overlays.png", "plots/test_dice_per_class.png"):
        assert (run / rel).is_file(), rel
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dataset"] == "mni152_tissue" and metrics["steps"] == 2
    for split in ("val", "test"):
        names = {f"{m}{c}" for m in ("dice", "hd95") for c in ("", "_csf", "_grey_matter", "_white_matter")}
        assert names <= set(metrics[split]), metrics[split]
        assert 0.0 <= metrics[split]["dice"] <= 1.0 and metrics[split]["hd95"] >= 0.0

    proc, _ = side_by_side(
        lambda: run_cli("evaluate", "app=transdae", root=tmp_path),
        lambda: run_cli("export", "app=transdae", root=tmp_path),
    )
    assert "test:" in proc.stdout
    export_dir = tmp_path / "exports" / "transdae"
    info = json.loads((export_dir / "export.json").read_text())
    assert info["graph"]["format"] == "onnx", info["graph"]
    assert info["data_card"] == "embedded_brains" and info["spec"]["classes"][1] == "csf"

    model = load(export_dir)
    import onnxruntime as ort

    (image,) = model.example_inputs()
    got = ort.InferenceSession(str(export_dir / "model.onnx")).run(None, {"image": image[:1].numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model(image[:1]).numpy(), rtol=1e-4, atol=1e-4)

    # a volume with a flipped first axis and a shifted origin: the labels must come back on its own grid
    rng = np.random.default_rng(0)
    volume = np.zeros((20, 24, 6), np.float32)
    volume[4:16, 5:19] = rng.uniform(0.3, 1.0, (12, 14, 6))
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (40.0, -20.0, 5.0)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "brain.nii.gz")
    Image.fromarray((volume[..., 3] * 255).astype(np.uint8)).save(tmp_path / "slice.png")
    out_nii, out_png = tmp_path / "pred_nii", tmp_path / "pred_png"
    export = f"export_dir={export_dir}"
    side_by_side(
        lambda: run_cli("predict", "app=transdae", f"input={tmp_path / 'brain.nii.gz'}", export, f"out={out_nii}",
                        root=tmp_path),
        lambda: run_cli("predict", "app=transdae", f"input={tmp_path / 'slice.png'}", export, f"out={out_png}",
                        root=tmp_path / "b"),
    )  # fmt: skip
    labels = nib.load(out_nii / "labels.nii.gz")
    assert labels.shape == volume.shape and np.allclose(labels.affine, affine)
    assert set(np.unique(np.asarray(labels.dataobj))) <= {0, 1, 2, 3}
    assert (out_nii / "overlay.png").is_file() and "classes" in json.loads((out_nii / "prediction.json").read_text())
    assert np.asarray(Image.open(out_png / "labels.png")).shape == (20, 24) and (out_png / "overlay.png").is_file()

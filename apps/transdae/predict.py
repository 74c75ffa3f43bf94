"""Segment a user's NIfTI volume or PNG slice with a TransDAE (or baseline) export.

- NIfTI (.nii, .nii.gz): read in RAS+ (`common.medical.volumes`), intensities divided by the volume's maximum (as
  the embedded brains), each axial slice padded to a square, resized to the model's size, predicted, and the
  logits resized back. Written: `labels.nii.gz` on the input's own voxel grid and orientation, with the input's
  affine, `prediction.json` (voxel count and volume in mL of each class) and `overlay.png` (three axial slices).
- Images (.png, .jpg, ...): one slice, grey values / 255. Written: `labels.png` (8-bit class indices),
  `prediction.json` (pixel counts) and `overlay.png`.

The default model was trained on skull-stripped T1 brains (MNI152) in axial slices: it expects the same.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from apps.transdae.module import predict_volume
from common.data.images import open_image
from common.errors import InputError
from common.medical.overlay import overlay_rows
from common.medical.volumes import is_nifti, load_volume, save_volume


def _square(volume: np.ndarray) -> tuple[np.ndarray, tuple[slice, slice]]:
    """[H, W, ...] zero-padded to a centred square; returns it and the window that crops it back."""
    h, w = volume.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    pads = [(top, side - h - top), (left, side - w - left)] + [(0, 0)] * (volume.ndim - 2)
    return np.pad(volume, pads), (slice(top, top + h), slice(left, left + w))


def segment(model, image: np.ndarray) -> np.ndarray:
    """image [H, W, Z] in [0, 1] -> class indices [H, W, Z] (axial slices along the last axis)."""
    squared, window = _square(image)
    slices = torch.from_numpy(np.ascontiguousarray(squared.transpose(2, 0, 1), dtype=np.float32))
    labels = predict_volume(model.eval(), slices, int(model.img_size)).numpy().transpose(1, 2, 0)
    return labels[window]


def _scaled(image: np.ndarray, path: Path, expected: str) -> np.ndarray:
    top = float(image.max())
    if top <= 0:
        raise InputError(path, expected, problem="the image is empty (no positive intensity)")
    return (np.clip(image, 0, None) / top).astype(np.float32)


def _counts(labels: np.ndarray, names: list[str], voxel_ml: float | None) -> dict:
    counts = np.bincount(labels.ravel(), minlength=len(names))
    return {
        name: {"voxels": int(c), **({"ml": round(float(c) * voxel_ml, 3)} if voxel_ml else {})}
        for name, c in zip(names, counts)
    }


def _to_input_orientation(labels_ras: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Labels on the RAS+ grid back onto the input's own voxel axes (undoing nibabel's as_closest_canonical)."""
    to_input = nib.orientations.ornt_transform(nib.orientations.axcodes2ornt("RAS"), nib.io_orientation(affine))
    return nib.orientations.apply_orientation(labels_ras, to_input)


def predict(model, input_path: Path, out_dir: Path, spec: dict | None = None) -> dict:
    input_path, out_dir = Path(input_path), Path(out_dir)
    names = list(model.class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {"prediction": out_dir / "prediction.json", "overlay": out_dir / "overlay.png"}
    if is_nifti(input_path):
        expected = "a NIfTI volume (.nii or .nii.gz) with 3 spatial dimensions and positive intensities"
        image, affine_ras = load_volume(input_path)
        image = _scaled(image, input_path, expected)
        labels = segment(model, image)
        affine = nib.load(input_path).affine
        written["labels"] = save_volume(
            out_dir / "labels.nii.gz", _to_input_orientation(labels.astype(np.uint8), affine), affine
        )
        voxel_ml = abs(float(np.linalg.det(affine_ras[:3, :3]))) / 1000.0
        zs = np.flatnonzero(image.max(axis=(0, 1)) > 0)
        picks = zs[[len(zs) // 4, len(zs) // 2, 3 * len(zs) // 4]] if len(zs) else [image.shape[2] // 2]
        rows = [{"image": image[..., z], "prediction": labels[..., z]} for z in picks]
        summary = {"input": str(input_path), "shape": list(image.shape), "classes": _counts(labels, names, voxel_ml)}
    else:
        expected = "a NIfTI volume (.nii, .nii.gz) or a 2-D image (png, jpg, ...)"
        image = np.asarray(open_image(input_path, "L"), dtype=np.float32)
        image = _scaled(image, input_path, expected)
        labels = segment(model, image[..., None])[..., 0]
        written["labels"] = out_dir / "labels.png"
        Image.fromarray(labels.astype(np.uint8)).save(written["labels"])
        # image rows run top to bottom, while overlay_rows draws axis 0 as x: hand it the transposed slice
        rows = [{"image": image.T[:, ::-1], "prediction": labels.T[:, ::-1]}]
        summary = {"input": str(input_path), "shape": list(image.shape), "classes": _counts(labels, names, None)}
    overlay_rows(rows, names, written["overlay"], f"{input_path.name}: {model.arch}")
    written["prediction"].write_text(json.dumps(summary, indent=1) + "\n")
    print(f"\n{input_path.name}: " + ", ".join(f"{n} {v['voxels']}" for n, v in summary["classes"].items()))
    return written

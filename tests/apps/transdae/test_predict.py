"""predict's geometry with a model whose answer is known (a threshold on intensity): the label map lands on the
input's own voxels and affine, whatever the file's orientation; non-square slices come back unstretched."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from apps.transdae.predict import predict
from common.errors import InputError


class Threshold(nn.Module):
    """Class 1 where the intensity is above 0.5, else 0 (logits from a sharp sigmoid)."""

    arch, img_size, num_classes, class_names = "threshold", 32, 2, ["background", "bright"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([0.5 - x, x - 0.5], dim=1) * 100


def test_nifti_labels_on_the_inputs_grid(tmp_path):
    rng = np.random.default_rng(0)
    volume = rng.uniform(0.0, 1.0, (20, 26, 7)).astype(np.float32)
    volume[volume > 0.5] = 0.9  # well away from 0.5, so resizing leaves the threshold's answer
    volume[volume <= 0.5] = 0.1
    affine = np.array([[0, 0, -3.0, 10], [2.0, 0, 0, -5], [0, -2.0, 0, 7], [0, 0, 0, 1]])  # an oblique-free LPI-ish
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "v.nii.gz")
    written = predict(Threshold(), tmp_path / "v.nii.gz", tmp_path / "out")
    labels = nib.load(written["labels"])
    assert np.allclose(labels.affine, affine) and labels.shape == volume.shape
    agree = (np.asarray(labels.dataobj) == (volume > 0.5)).mean()
    assert agree > 0.9, agree  # resizing each slice to 32 x 32 and back blurs edges only


def test_png_slice(tmp_path):
    image = np.zeros((30, 50), np.uint8)
    image[5:20, 10:45] = 230
    Image.fromarray(image).save(tmp_path / "s.png")
    written = predict(Threshold(), tmp_path / "s.png", tmp_path / "out")
    labels = np.asarray(Image.open(written["labels"]))
    assert labels.shape == (30, 50) and (labels == (image > 128)).mean() > 0.95


def test_bad_files_are_named_input_errors(tmp_path):
    (tmp_path / "flat.nii.gz").write_bytes(b"not a nifti")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.float32), np.eye(4)), tmp_path / "empty.nii.gz")
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.float32), np.eye(4)), tmp_path / "flat2d.nii.gz")
    (tmp_path / "notes.txt").write_text("hello")
    for name, problem in [("flat.nii.gz", "unreadable NIfTI"), ("empty.nii.gz", "empty"), ("flat2d.nii.gz", "not 3-D"),
                          ("notes.txt", "cannot read image")]:  # fmt: skip
        with pytest.raises(InputError, match=problem):
            predict(Threshold(), tmp_path / name, tmp_path / "out")

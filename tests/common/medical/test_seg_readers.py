"""The real segmentation layouts, on tiny files written here: Synapse (npz slices, h5 volumes) and MSD-style
NIfTI folders; named DatasetErrors for what is missing or malformed."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from common.errors import DatasetError
from common.medical.seg_readers import SYNAPSE_CLASSES, read_msd, read_synapse
from common.medical.seg_transforms import train_transforms
from common.medical.volumes import save_volume


def _synapse(root, cases=4, slices=3, size=16):
    rng = np.random.default_rng(0)
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    for c in range(cases):
        for s in range(slices):
            label = rng.integers(0, 9, (size, size))
            np.savez(root / "train_npz" / f"case{c:04d}_slice{s:03d}.npz", image=label / 8.0, label=label)
    with h5py.File(root / "test_vol_h5" / "case0100.npy.h5", "w") as f:
        f["image"] = rng.random((5, size, size)).astype(np.float32)
        f["label"] = rng.integers(0, 9, (5, size, size))


def test_synapse_layout(tmp_path):
    _synapse(tmp_path)
    data = read_synapse(tmp_path, val_cases=1)
    assert data.class_names == SYNAPSE_CLASSES and not data.flip  # left/right kidneys: no flips
    assert len(data.train_items) == 9 and len(data.val) == 1 and len(data.test) == 1
    image, label = data.train_items[0]()
    assert image.shape == (16, 16) and np.allclose(image * 8, label)
    val_image, val_label, _ = data.val[0]()  # case0003's slices, stacked in slice order
    assert val_image.shape == (3, 16, 16)
    with np.load(tmp_path / "train_npz" / "case0003_slice002.npz") as f:
        assert np.array_equal(val_label[2], f["label"])
    test_image, test_label, spacing = data.test[0]()
    assert test_image.shape == test_label.shape == (5, 16, 16) and len(spacing) == 3
    item = data.train(train_transforms(32, augment=False))[0]
    assert item["image"].shape == (1, 32, 32) and item["label"].dtype.is_floating_point is False


def test_synapse_refuses_pickles_and_missing_parts(tmp_path):
    with pytest.raises(DatasetError, match="train_npz"):
        read_synapse(tmp_path)
    _synapse(tmp_path)
    bad = tmp_path / "train_npz" / "case0000_slice000.npz"
    np.savez(bad, image=np.array([{"a": 1}], dtype=object), label=np.zeros(1))
    with pytest.raises(DatasetError, match="case0000_slice000"):
        read_synapse(tmp_path).train_items[0]()


def _msd(root, cases=6, shape=(12, 10, 4)):
    rng = np.random.default_rng(1)
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    for c in range(cases):
        label = rng.integers(0, 3, shape)
        save_volume(root / "imagesTr" / f"case_{c}_0000.nii.gz", (label * 100 + 5).astype(np.float32), affine)
        save_volume(root / "labelsTr" / f"case_{c}.nii.gz", label.astype(np.uint8), affine)
    (root / "dataset.json").write_text('{"labels": {"0": "background", "1": "edema", "2": "tumour"}}')


def test_msd_layout(tmp_path):
    _msd(tmp_path)
    data = read_msd(tmp_path, val_cases=1)
    assert data.class_names == ["background", "edema", "tumour"] and data.flip
    assert len(data.test) == 1 and len(data.val) == 1 and len(data.train_items) == 4 * 4  # 4 cases x 4 slices
    image, label, spacing = data.test[0]()
    assert image.shape == label.shape == (4, 12, 10) and np.allclose(spacing, (0.8, 0.8, 2.5))
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert np.array_equal(image > 0.5, label == 2)  # intensity follows the label through the normalisation


def test_msd_errors(tmp_path):
    _msd(tmp_path, cases=2)
    with pytest.raises(DatasetError, match="pairs"):
        read_msd(tmp_path, val_cases=1)
    (tmp_path / "imagesTr" / "case_0_0000.nii.gz").unlink()
    with pytest.raises(DatasetError, match="case_0"):
        read_msd(tmp_path, val_cases=0)
    with pytest.raises(DatasetError, match="data.root"):
        read_msd(None)

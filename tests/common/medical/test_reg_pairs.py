"""The real registration-pairs reader on tiny NIfTI files: layout, resizing, labels, and named refusals."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import DatasetError, InputError
from common.medical.reg_pairs import pair_folders, read_pair
from common.medical.volumes import load_volume, save_volume

CARD = "nifti_registration_pairs"


def write_pair(folder, shape=(12, 14, 10), labels=True, fixed_shape=None, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    save_volume(folder / "moving.nii.gz", rng.random(shape).astype(np.float32) * 300, np.eye(4))
    save_volume(folder / "fixed.nii", rng.random(fixed_shape or shape).astype(np.float32), np.eye(4))
    if labels:
        save_volume(folder / "moving_labels.nii.gz", rng.integers(0, 4, shape).astype(np.int16), np.eye(4))
    return folder


def test_reads_resizes_and_scales_a_pair(tmp_path):
    pair = read_pair(write_pair(tmp_path / "p"), size=8)
    assert pair["moving"].shape == pair["fixed"].shape == (1, 8, 8, 8)
    moving = pair["moving"][0]
    assert float(moving.min()) >= 0.0 and float(moving.max()) <= 1.0  # min-max scaled, then interpolated
    # corners aligned: the resized corner voxels are the scaled original corners
    original, _ = load_volume(tmp_path / "p" / "moving.nii.gz")
    scaled = (original - original.min()) / (original.max() - original.min())
    assert abs(float(moving[-1, -1, -1]) - float(scaled[-1, -1, -1])) < 1e-5
    assert abs(float(moving[0, 0, 0]) - float(scaled[0, 0, 0])) < 1e-5
    assert not pair["moving_labels"].dtype.is_floating_point
    assert set(pair["moving_labels"].unique().tolist()) <= {0, 1, 2, 3}
    assert "fixed_labels" not in pair and pair["shape"] == (12, 14, 10)


def test_split_folders_and_refusals(tmp_path):
    for name in ("b", "a"):
        write_pair(tmp_path / "root" / "train" / name)
    assert [p.name for p in pair_folders(tmp_path / "root", "train", CARD)] == ["a", "b"]
    with pytest.raises(DatasetError, match="no pair folders for the val split"):
        pair_folders(tmp_path / "root", "val", CARD)
    (tmp_path / "root" / "train" / "a" / "pair.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(DatasetError) as err:
        pair_folders(tmp_path / "root", "train", CARD)
    assert "pickle" in str(err.value) and "nib.save" in str(err.value) and err.value.card == CARD


def test_bad_pairs_raise_named_errors(tmp_path):
    with pytest.raises(InputError, match="differ in shape"):
        read_pair(write_pair(tmp_path / "shapes", fixed_shape=(12, 14, 11), labels=False), size=8)
    missing = write_pair(tmp_path / "missing", labels=False)
    (missing / "fixed.nii").unlink()
    with pytest.raises(DatasetError, match="no fixed.nii.gz") as err:
        read_pair(missing, size=8, card=CARD)
    assert err.value.card == CARD
    flat = write_pair(tmp_path / "flat", labels=False)
    save_volume(flat / "fixed.nii", np.zeros((12, 14), np.float32), np.eye(4))
    with pytest.raises(InputError, match="not 3-D"):
        read_pair(flat, size=8)

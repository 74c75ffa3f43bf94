"""NIfTI reading: canonical orientation, named errors for what is not a 3-D volume, atomic writes that round-trip."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from common.errors import DatasetError, InputError
from common.medical.volumes import load_volume, save_volume


def test_round_trip_keeps_values_and_affine(tmp_path):
    data = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)
    affine = np.diag([2.0, 1.5, 1.0, 1.0])
    affine[:3, 3] = (-10, 4, 2)
    for name in ("v.nii", "v.nii.gz"):
        loaded, loaded_affine = load_volume(save_volume(tmp_path / name, data, affine))
        np.testing.assert_array_equal(loaded, data)
        np.testing.assert_allclose(loaded_affine, affine)
    assert (tmp_path / "v.nii.gz").read_bytes()[:2] == b"\x1f\x8b"  # the .gz name got a gzip file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.nii", "v.nii.gz"]  # no temporary files left


def test_flipped_axis_comes_back_in_ras_order(tmp_path):
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])  # x and y stored right-to-left and front-to-back
    loaded, affine = load_volume(save_volume(tmp_path / "lps.nii.gz", data, lps))
    np.testing.assert_array_equal(loaded, data[::-1, ::-1, :])
    assert (np.diag(affine)[:3] > 0).all()


@pytest.mark.parametrize(
    ("shape", "problem"),
    [((4, 4), "not 3-D"), ((4, 4, 4, 2), "not 3-D"), ((4, 1, 4), "below 2 voxels")],
)
def test_wrong_dimensionality_is_an_input_error(tmp_path, shape, problem):
    path = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.float32), np.eye(4)), path)
    with pytest.raises(InputError, match=problem):
        load_volume(path)


def test_single_time_point_volume_is_accepted(tmp_path):
    path = tmp_path / "t.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((3, 3, 3, 1), np.float32), np.eye(4)), path)
    assert load_volume(path)[0].shape == (3, 3, 3)


def test_bad_files_name_the_problem(tmp_path):
    (tmp_path / "scan.png").write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match="not a NIfTI file"):
        load_volume(tmp_path / "scan.png")
    (tmp_path / "trunc.nii.gz").write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(InputError, match="unreadable NIfTI"):
        load_volume(tmp_path / "trunc.nii.gz")
    nan = np.full((3, 3, 3), np.nan, np.float32)
    nib.save(nib.Nifti1Image(nan, np.eye(4)), tmp_path / "nan.nii.gz")
    with pytest.raises(DatasetError, match="NaN") as info:
        load_volume(tmp_path / "nan.nii.gz", card="some_card")
    assert "data_cards/some_card.md" in str(info.value)


def test_labels_must_be_non_negative_integers(tmp_path):
    path = save_volume(tmp_path / "l.nii.gz", np.full((3, 3, 3), 1.5, np.float32), np.eye(4))
    with pytest.raises(InputError, match="non-negative integers"):
        load_volume(path, labels=True)
    path = save_volume(tmp_path / "ok.nii.gz", np.full((3, 3, 3), 2, np.uint8), np.eye(4))
    assert load_volume(path, labels=True)[0].dtype == np.int64

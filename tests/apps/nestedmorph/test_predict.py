"""predict() of a tiny NestedMorph in memory (no export): a pair folder in, the warped volume, the displacement,
warped labels and the picture out; files it cannot use raise named InputErrors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from apps.nestedmorph.model import RegistrationNet
from apps.nestedmorph.predict import predict
from common.errors import InputError
from common.medical.volumes import save_volume

SPEC = {"spec": {"size": 32}}


@pytest.fixture(scope="module")
def model():
    return RegistrationNet(size=32, dims=(8, 16, 32, 64), decoder_depth=1).eval()


def _pair(folder, shape=(20, 24, 18), fixed_shape=None):
    rng = np.random.default_rng(0)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_volume(folder / "moving.nii.gz", rng.random(shape).astype(np.float32), affine)
    save_volume(folder / "fixed.nii.gz", rng.random(fixed_shape or shape).astype(np.float32), affine)
    save_volume(folder / "moving_labels.nii.gz", rng.integers(0, 3, shape).astype(np.int16), affine)
    return folder


def test_pair_folder_in_registration_out(model, tmp_path):
    written = predict(model, _pair(tmp_path / "pair"), tmp_path / "out", SPEC)
    assert set(written) == {"warped", "fixed", "ddf", "warped_labels", "picture", "summary"}
    warped, ddf = nib.load(written["warped"]), nib.load(written["ddf"])
    assert warped.shape == (32, 32, 32) and ddf.shape == (32, 32, 32, 3)
    # the cube spans the input's corners: 19 voxels of 2 mm -> 31 voxels of 38/31 mm
    assert np.allclose(np.diag(warped.affine)[:3], [38 / 31, 46 / 31, 34 / 31])
    summary = json.loads((tmp_path / "out" / "registration.json").read_text())
    assert summary["folding_percent"] == 0.0 and summary["max_displacement_mm"] < 0.1  # untrained: near identity


def test_unusable_inputs_raise_input_errors(model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(InputError, match="neither a folder nor a NIfTI file"):
        predict(model, text, tmp_path / "o1", SPEC)
    with pytest.raises(InputError, match="differ in shape"):
        predict(model, _pair(tmp_path / "mismatch", fixed_shape=(20, 24, 17)), tmp_path / "o2", SPEC)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no moving.nii.gz"):
        predict(model, empty, tmp_path / "o3", SPEC)
    flat = tmp_path / "flat.nii.gz"
    save_volume(flat, np.ones((10, 12), np.float32), np.eye(4))
    with pytest.raises(InputError, match="not 3-D"):
        predict(model, flat, tmp_path / "o4", SPEC)


def test_fixed_option_registers_one_volume_onto_another(model, tmp_path):
    pair = _pair(tmp_path / "pair")
    written = predict(model, pair / "moving.nii.gz", tmp_path / "out", SPEC, fixed=str(pair / "fixed.nii.gz"))
    assert {"warped", "fixed", "ddf", "picture", "summary"} <= set(written) and "warped_labels" not in written
    fixed = nib.load(written["fixed"])
    assert fixed.shape == (32, 32, 32) and np.allclose(np.diag(fixed.affine)[:3], [38 / 31, 46 / 31, 34 / 31])


def test_fixed_option_refuses_what_it_cannot_pair(model, tmp_path):
    pair = _pair(tmp_path / "pair", fixed_shape=(20, 24, 17))
    moving, fixed = pair / "moving.nii.gz", str(pair / "fixed.nii.gz")
    with pytest.raises(InputError, match=r"moving \[20, 24, 18\] and fixed \[20, 24, 17\] differ in shape"):
        predict(model, moving, tmp_path / "o1", SPEC, fixed=fixed)
    with pytest.raises(InputError, match="not a pair folder"):
        predict(model, pair, tmp_path / "o2", SPEC, fixed=fixed)
    with pytest.raises(InputError, match="input file not found") as err:
        predict(model, moving, tmp_path / "o3", SPEC, fixed=str(tmp_path / "nowhere.nii.gz"))
    assert err.value.path.name == "nowhere.nii.gz"
    blank = tmp_path / "blank.nii.gz"
    save_volume(blank, np.zeros((20, 24, 18), np.float32), np.eye(4))
    with pytest.raises(InputError, match="empty volume"):
        predict(model, moving, tmp_path / "o4", SPEC, fixed=str(blank))

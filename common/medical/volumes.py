"""The one way the medical apps read and write NIfTI volumes.

Volumes are returned in nibabel's closest canonical orientation (RAS+), as float32 arrays with their 4x4 affine, so
that slices and flips mean the same thing for every file. Errors name the file: `InputError` for a user's file given
to predict, `DatasetError` naming the data card for a file of a dataset.
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from common.errors import DatasetError, InputError
from common.utils.files import atomic_write

EXPECTED = "a NIfTI volume (.nii or .nii.gz) with 3 spatial dimensions"
SUFFIXES = (".nii", ".nii.gz")


def is_nifti(path: str | Path) -> bool:
    return str(path).lower().endswith(SUFFIXES)


def load_volume(path: str | Path, card: str | None = None, labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(data [X, Y, Z] float32 (int64 with `labels=True`), affine [4, 4]) of the NIfTI file at `path`, RAS+.
    A trailing singleton 4th dimension is dropped; anything else that is not 3-D is refused."""
    path = Path(path)

    def error(problem: str):
        return InputError(path, EXPECTED, problem) if card is None else DatasetError(path, EXPECTED, card, problem)

    if not path.is_file():
        raise error("input file not found" if card is None else "volume file not found")
    if not is_nifti(path):
        raise error(f"not a NIfTI file (suffix {''.join(path.suffixes) or 'none'})")
    try:
        image = nib.as_closest_canonical(nib.load(path))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # nibabel raises many types for truncated or foreign files
        raise error(f"unreadable NIfTI file ({type(exc).__name__}: {exc})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise error(f"volume has shape {list(data.shape)}, not 3-D")
    if min(data.shape) < 2:
        raise error(f"volume has shape {list(data.shape)}: a spatial dimension below 2 voxels")
    data = np.asarray(data, dtype=np.float64)
    if not np.isfinite(data).all():
        raise error("volume holds NaN or infinite values")
    if labels:
        if (data != np.round(data)).any() or data.min() < 0:
            raise error("label volume holds values that are not non-negative integers")
        return data.astype(np.int64), image.affine.astype(np.float64)
    return data.astype(np.float32), image.affine.astype(np.float64)


def save_volume(path: str | Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write `data` with `affine` as NIfTI at `path`, atomically (a reader never sees half a file)."""
    path = Path(path)
    if not is_nifti(path):
        raise ValueError(f"{path}: a NIfTI path ends in .nii or .nii.gz")
    image = nib.Nifti1Image(np.asarray(data), np.asarray(affine, dtype=np.float64))
    suffix = ".nii.gz" if str(path).lower().endswith(".gz") else ".nii"
    # nibabel picks compression from the file name, so the temporary file must keep the suffix
    return atomic_write(path, lambda tmp: _save_as(image, tmp, suffix))


def _save_as(image: nib.Nifti1Image, tmp: Path, suffix: str) -> None:
    named = tmp.with_name(tmp.name + suffix)
    try:
        nib.save(image, named)
        named.replace(tmp)
    finally:
        named.unlink(missing_ok=True)

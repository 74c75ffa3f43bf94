"""The embedded brains: real MRI volumes that installed packages ship, with label maps on the same voxels.

- `mni152`: the ICBM 2009c symmetric template T1 (an average of 152 adults, skull-stripped) from nilearn's package
  data, with tissue labels 0 background, 1 CSF, 2 grey matter, 3 white matter: inside the brain's filled envelope,
  each voxel takes its most probable tissue. Grey and white matter probabilities are the template's own maps;
  nilearn does not ship the CSF map, so CSF's is what they leave, 1 - p_gm - p_wm (ventricles and sulci; its T1
  intensity is the darkest of the three).
- `colin27`: one adult scanned 27 times and averaged (Holmes 1998; MRIcron's `ch2bet`, skull-stripped, 1 mm), with
  the AAL atlas (116 regions, drawn on this very brain) on the same grid.
- `macaque`: the INIA19 rhesus macaque template (skull-stripped, 0.5 mm) with its NeuroMaps labels.

Only files are read (nibabel); nilearn's code, and its fetchers, are never imported. The data card is
`data_cards/embedded_brains.md`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from common.errors import DatasetError
from common.medical.volumes import load_volume

CARD = "embedded_brains"
MRICRON = Path("/usr/share/mricron/templates")
MNI_FILE = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"
TISSUES = ("background", "csf", "grey_matter", "white_matter")


@dataclass(frozen=True)
class Brain:
    name: str
    image: np.ndarray  # [X, Y, Z] float32, intensities scaled to [0, 1], RAS+
    labels: np.ndarray  # [X, Y, Z] int64 on the image's voxels
    label_names: tuple[str, ...]  # index -> name; 0 is background
    affine: np.ndarray  # [4, 4] voxel -> mm


def nilearn_data_dir() -> Path:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("nilearn", "the nilearn wheel's package data (make setup installs nilearn==0.14.1)", CARD)
    return Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"


def _scaled(image: np.ndarray) -> np.ndarray:
    return (image / max(float(image.max()), 1e-6)).astype(np.float32)


def _same_grid(path_a: Path, affine_a: np.ndarray, shape_a, path_b: Path, affine_b: np.ndarray, shape_b) -> None:
    if tuple(shape_a) != tuple(shape_b) or not np.allclose(affine_a, affine_b):
        raise DatasetError(path_b, f"a label volume on the voxel grid of {path_a.name}", CARD, "grids differ")


def mni152() -> Brain:
    folder = nilearn_data_dir()
    t1_path = folder / MNI_FILE.format("t1")
    t1, affine = load_volume(t1_path, card=CARD)
    gm_path, wm_path = folder / MNI_FILE.format("gm"), folder / MNI_FILE.format("wm")
    (gm, gm_affine), (wm, wm_affine) = load_volume(gm_path, card=CARD), load_volume(wm_path, card=CARD)
    _same_grid(t1_path, affine, t1.shape, gm_path, gm_affine, gm.shape)
    _same_grid(t1_path, affine, t1.shape, wm_path, wm_affine, wm.shape)
    gm, wm = _scaled(gm), _scaled(wm)
    # Closing bridges the sulci between neighbouring gyri; filling then takes in the ventricles.
    tissue = (gm > 0.5) | (wm > 0.5)
    envelope = ndimage.binary_fill_holes(ndimage.binary_closing(tissue, np.ones((3, 3, 3)), iterations=3))
    # The most probable tissue (CSF: 1 - p_gm - p_wm), so a voxel on the grey/white border, where neither map
    # reaches 0.5, goes to the larger of the two instead of to CSF.
    most_probable = 1 + np.stack([1 - gm - wm, gm, wm]).argmax(0)
    labels = np.where(envelope, most_probable, 0).astype(np.int64)
    return Brain("mni152", _scaled(t1), labels, TISSUES, affine)


def _label_names(path: Path, count: int) -> tuple[str, ...]:
    """`index name [code]` lines of MRIcron's `.nii.txt` beside an atlas; unnamed indices keep their number."""
    names = ["background"] + [str(i) for i in range(1, count)]
    if path.is_file():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0].isdigit() and 0 < int(parts[0]) < count:
                names[int(parts[0])] = parts[1]
    return tuple(names)


def _mricron_brain(name: str, image_file: str, label_file: str) -> Brain:
    image_path, label_path = MRICRON / image_file, MRICRON / label_file
    if not MRICRON.is_dir():
        raise DatasetError(MRICRON, "the Debian package mricron-data (make setup installs it)", CARD)
    image, affine = load_volume(image_path, card=CARD)
    labels, label_affine = load_volume(label_path, card=CARD, labels=True)
    _same_grid(image_path, affine, image.shape, label_path, label_affine, labels.shape)
    names = _label_names(label_path.with_suffix("").with_suffix(".nii.txt"), int(labels.max()) + 1)
    return Brain(name, _scaled(image), labels, names, affine)


def colin27() -> Brain:
    return _mricron_brain("colin27", "ch2bet.nii.gz", "aal.nii.gz")


def macaque() -> Brain:
    return _mricron_brain("macaque", "inia19-t1-brain.nii.gz", "inia19-NeuroMaps.nii.gz")


BRAINS = {"mni152": mni152, "colin27": colin27, "macaque": macaque}


def load_brain(name: str) -> Brain:
    if name not in BRAINS:
        raise DatasetError(name, f"one of the embedded brains {sorted(BRAINS)}", CARD, "unknown embedded brain")
    return BRAINS[name]()

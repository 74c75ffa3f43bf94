"""Real registration pairs on disk: a folder of NIfTI pairs, one pair per folder, in three splits.

    <root>/{train,val,test}/<pair>/moving.nii.gz, fixed.nii.gz [, moving_labels.nii.gz, fixed_labels.nii.gz]

(`.nii` works too.) Images are scaled to [0, 1] (min-max) and resized to a `size`^3 cube, corners aligned, as
the registration papers resize OASIS/IXI/HCP volumes (NestedMorph: 64^3); labels are resized by nearest
neighbour. The official NestedMorph/TransMorph `.pkl` pairs are refused (unpickling runs code): convert them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import DatasetError, InputError
from common.medical.volumes import SUFFIXES, load_volume

ROLES = ("moving", "fixed")
EXPECTED = "<root>/{train,val,test}/<pair>/{moving,fixed}.nii.gz (optional {moving,fixed}_labels.nii.gz)"
PKL_HINT = (
    "pickled pairs are refused (unpickling runs code). Convert each on a machine you trust, e.g.\n"
    "    import pickle, numpy as np, nibabel as nib\n"
    "    moving, fixed = pickle.load(open('pair.pkl', 'rb'))[:2]\n"
    "    for name, v in (('moving', moving), ('fixed', fixed)):\n"
    "        nib.save(nib.Nifti1Image(np.asarray(v, np.float32), np.eye(4)), f'<root>/train/pair/{name}.nii.gz')"
)


def find(folder: Path, stem: str) -> Path | None:
    hits = [folder / f"{stem}{suffix}" for suffix in SUFFIXES if (folder / f"{stem}{suffix}").is_file()]
    return hits[0] if hits else None


def pair_folders(root: str | Path, split: str, card: str) -> list[Path]:
    """The pair folders of one split, sorted; refuses `.pkl` files anywhere under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, EXPECTED, card)
    pickled = next(iter(sorted(root.rglob("*.pkl"))), None)
    if pickled is not None:
        raise DatasetError(pickled, EXPECTED, card, problem=PKL_HINT)
    folders = sorted(p for p in (root / split).glob("*") if p.is_dir()) if (root / split).is_dir() else []
    if not folders:
        raise DatasetError(root / split, EXPECTED, card, problem=f"no pair folders for the {split} split")
    return folders


def resize(volume: np.ndarray, size: int, labels: bool = False) -> torch.Tensor:
    """[X, Y, Z] -> [1, size, size, size]: min-max scaled and trilinear for images, nearest for labels."""
    x = torch.from_numpy(volume)[None, None]
    if labels:
        return F.interpolate(x.double(), size=(size,) * 3, mode="nearest")[0].long()
    x = (x - x.min()) / (x.max() - x.min()).clamp_min(1e-6)
    return F.interpolate(x.float(), size=(size,) * 3, mode="trilinear", align_corners=True)[0]


def read_pair(folder: str | Path, size: int, card: str | None = None) -> dict:
    """The pair in `folder` (moving.nii.gz, fixed.nii.gz, optional *_labels.nii.gz), read by `read_volumes`."""
    folder = Path(folder)
    paths = {}
    for role in ROLES:
        paths[role] = find(folder, role)
        if paths[role] is None:
            problem = f"no {role}.nii.gz in the pair folder"
            if card is None:
                raise InputError(folder, EXPECTED, problem)
            raise DatasetError(folder, EXPECTED, card, problem)
        paths[f"{role}_labels"] = find(folder, f"{role}_labels")
    return read_volumes(paths, size, card)


def read_volumes(paths: dict[str, Path | None], size: int, card: str | None = None, expected: str = EXPECTED) -> dict:
    """{moving, fixed: [1, S, S, S] float, (moving_labels, fixed_labels: [1, S, S, S] int64), affine, shape} from
    `paths[role]` and the optional `paths[f"{role}_labels"]` (roles moving, fixed).

    `card=None` reads a user's files (InputError); else a dataset's (DatasetError naming the card). The two
    images must have one shape and hold some contrast; `affine` and `shape` are the fixed image's (to write
    results in its space)."""

    def error(path: Path, problem: str):
        return InputError(path, expected, problem) if card is None else DatasetError(path, expected, card, problem)

    out, shapes = {}, {}
    for role in ROLES:
        path = Path(paths[role])
        image, affine = load_volume(path, card=card)
        if image.max() <= image.min():
            raise error(path, f"empty volume: every voxel is {float(image.min()):g}")
        out[role], shapes[role] = resize(image, size), image.shape
        out["affine"] = affine
        label_path = paths.get(f"{role}_labels")
        if label_path is not None:
            labels, _ = load_volume(label_path, card=card, labels=True)
            if labels.shape != image.shape:
                raise error(label_path, f"shape {list(labels.shape)}, its image's {list(image.shape)}")
            out[f"{role}_labels"] = resize(labels, size, labels=True)
    if shapes["moving"] != shapes["fixed"]:
        raise error(
            Path(paths["fixed"]), f"moving {list(shapes['moving'])} and fixed {list(shapes['fixed'])} differ in shape"
        )
    out["shape"] = shapes["fixed"]
    return out

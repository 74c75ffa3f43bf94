"""Readers of the real segmentation layouts, returning training slices and evaluation volumes.

- Synapse multi-organ CT as TransUNet preprocessed it (`data_cards/synapse.md`): `train_npz/caseXXXX_sliceYYY.npz`
  (keys `image` [512, 512] in [0, 1], `label` [512, 512]) and `test_vol_h5/caseXXXX.npy.h5` (datasets `image`,
  `label` [Z, 512, 512]); 9 classes. Read with numpy (`allow_pickle=False`) and h5py: nothing is unpickled.
  Validation: the last `val_cases` training cases, stacked back into volumes.
- MSD-style NIfTI folders (`data_cards/msd_nifti.md`): `imagesTr/<case>.nii.gz` with `labelsTr/<case>.nii.gz`
  (the same name; MSD's `_0000` channel suffix on images is accepted), optional `dataset.json` with `labels`
  names. Cases are split in sorted order: the last 20% (at least 1) test, the `val_cases` before them validation.
  Slices are axial (axis 2 of RAS+), intensities clipped to the volume's 0.5-99.5 percentiles and scaled to [0, 1].
Volumes are given as callables, read when the evaluation reaches them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import DatasetError
from common.medical.volumes import load_volume

SYNAPSE_CLASSES = [
    "background", "aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas", "spleen", "stomach",
]  # fmt: skip
SLICE_NAME = re.compile(r"(case\d+)_slice(\d+)\.npz$")


@dataclass
class SegData:
    """What a reader found: training slices (as a Dataset factory), validation and test volumes, class names."""

    class_names: list[str]
    train_items: list  # callables -> (image [H, W], label [H, W])
    val: list = field(default_factory=list)  # callables -> (image [Z, H, W], label [Z, H, W], spacing)
    test: list = field(default_factory=list)
    flip: bool = True  # whether a left-right flip keeps the labels true (not with left/right organs)

    def train(self, transform):
        from torch.utils.data import Dataset

        items = self.train_items

        class _Slices(Dataset):
            def __len__(self):
                return len(items)

            def __getitem__(self, i):
                image, label = items[i]()
                item = transform({"image": image[None].astype(np.float32), "label": label[None].astype(np.float32)})
                return {"image": item["image"].float(), "label": item["label"].long()}

        return _Slices()


def _root(root, card: str, *subdirs: str) -> Path:
    if root is None:
        raise DatasetError("data.root", f"data.root=PATH holding {', '.join(subdirs)}", card, "data.root not set")
    root = Path(root)
    for sub in subdirs:
        if not (root / sub).is_dir():
            raise DatasetError(root / sub, f"a folder {sub}/ under data.root", card)
    return root


def _npz_slice(path: Path, card: str):
    def read():
        try:
            with np.load(path, allow_pickle=False) as f:
                image, label = np.asarray(f["image"], np.float32), np.asarray(f["label"])
        except (OSError, ValueError, KeyError) as exc:
            raise DatasetError(path, "an .npz with arrays 'image' and 'label' [H, W]", card, str(exc)) from None
        if image.ndim != 2 or image.shape != label.shape:
            raise DatasetError(
                path, "'image' and 'label' of one 2-D shape", card, f"shapes {image.shape}, {label.shape}"
            )
        return image, label.astype(np.int64)

    return read


def _stacked_case(paths: list[Path], card: str):
    def read():
        image, label = zip(*(_npz_slice(p, card)() for p in paths))
        return np.stack(image), np.stack(label), (1.0, 1.0, 1.0)  # TransUNet's npz keep no spacing

    return read


def _h5_volume(path: Path, card: str):
    def read():
        import h5py

        try:
            with h5py.File(path, "r") as f:
                image, label = np.asarray(f["image"], np.float32), np.asarray(f["label"])
        except (OSError, KeyError) as exc:
            raise DatasetError(
                path, "an HDF5 file with datasets 'image' and 'label' [Z, H, W]", card, str(exc)
            ) from None
        if image.ndim != 3 or image.shape != label.shape:
            raise DatasetError(
                path, "'image' and 'label' of one 3-D shape", card, f"shapes {image.shape}, {label.shape}"
            )
        return image, label.astype(np.int64), (1.0, 1.0, 1.0)

    return read


def read_synapse(root, card: str = "synapse", val_cases: int = 2) -> SegData:
    root = _root(root, card, "train_npz", "test_vol_h5")
    cases: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted((root / "train_npz").glob("*.npz")):
        match = SLICE_NAME.search(path.name)
        if match:
            cases.setdefault(match[1], []).append((int(match[2]), path))
    tests = sorted((root / "test_vol_h5").glob("*.npy.h5"))
    if len(cases) <= val_cases or not tests:
        raise DatasetError(
            root, f"caseXXXX_sliceYYY.npz of more than {val_cases} cases and caseXXXX.npy.h5 test volumes", card,
            f"found {len(cases)} training cases and {len(tests)} test volumes",
        )  # fmt: skip
    names = sorted(cases)
    train_names, val_names = names[: len(names) - val_cases], names[len(names) - val_cases :]
    ordered = {n: [p for _, p in sorted(cases[n])] for n in names}
    return SegData(
        class_names=list(SYNAPSE_CLASSES),
        train_items=[_npz_slice(p, card) for n in train_names for p in ordered[n]],
        val=[_stacked_case(ordered[n], card) for n in val_names],
        test=[_h5_volume(p, card) for p in tests],
        flip=False,
    )


def _normalized(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, [0.5, 99.5])
    return ((np.clip(image, low, high) - low) / max(high - low, 1e-6)).astype(np.float32)


def _msd_case(image_path: Path, label_path: Path, card: str):
    def read():
        image, affine = load_volume(image_path, card=card)
        label, label_affine = load_volume(label_path, card=card, labels=True)
        if image.shape != label.shape or not np.allclose(affine, label_affine, atol=1e-3):
            raise DatasetError(label_path, f"a label map on the grid of {image_path.name}", card, "grids differ")
        spacing = tuple(float(v) for v in np.linalg.norm(affine[:3, :3], axis=0))
        return _normalized(image).transpose(2, 0, 1), label.transpose(2, 0, 1), spacing

    return read


def read_msd(root, card: str = "msd_nifti", val_cases: int = 2) -> SegData:
    root = _root(root, card, "imagesTr", "labelsTr")
    pairs = []
    for label_path in sorted((root / "labelsTr").glob("*.nii*")):
        if label_path.name.startswith("."):
            continue
        stem = label_path.name.split(".nii")[0]
        found = [root / "imagesTr" / f"{stem}{s}" for s in (".nii.gz", ".nii", "_0000.nii.gz", "_0000.nii")]
        image_path = next((p for p in found if p.is_file()), None)
        if image_path is None:
            raise DatasetError(root / "imagesTr" / f"{stem}.nii.gz", f"the image of {label_path.name}", card)
        pairs.append((image_path, label_path))
    n_test = max(1, len(pairs) // 5)
    if len(pairs) < n_test + val_cases + 1:
        raise DatasetError(root, f"at least {n_test + val_cases + 1} image/label pairs", card, f"found {len(pairs)}")
    cases = [_msd_case(i, lab, card) for i, lab in pairs]
    train, val, test = cases[: -n_test - val_cases], cases[-n_test - val_cases : -n_test], cases[-n_test:]
    loaded = [c() for c in train]  # training slices stay in memory: one read per case, not per slice
    items = [(lambda im=im, lab=lab, z=z: (im[z], lab[z])) for im, lab, _ in loaded for z in range(len(im))]
    num_classes = int(max(lab.max() for _, lab, _ in loaded)) + 1
    return SegData(class_names=_msd_names(root, num_classes), train_items=items, val=val, test=test)


def _msd_names(root: Path, num_classes: int) -> list[str]:
    names = ["background"] + [str(i) for i in range(1, num_classes)]
    meta = root / "dataset.json"
    if meta.is_file():
        labels = json.loads(meta.read_text()).get("labels", {})
        pairs = labels.items() if isinstance(labels, dict) else []
        for key, value in pairs:  # MSD: {"0": "background", "1": "edema"}; nnU-Net v2: {"background": 0, ...}
            index, name = (key, value) if str(key).isdigit() else (value, key)
            if str(index).isdigit() and int(index) < num_classes:
                names[int(index)] = str(name)
    return names

"""Readers of the real datasets' on-disk layouts into arrays: points [S, n, 6] (xyz on the unit sphere + unit
normals) float32, label [S] and, for part segmentation, parts [S, n].

- ModelNet40 / ModelNet10, `modelnet40_normal_resampled`: `<root>/modelnet{40,10}_shape_names.txt`,
  `modelnet{40,10}_{train,test}.txt` (ids such as `airplane_0001`), `<class>/<id>.txt` with 10,000 lines
  `x,y,z,nx,ny,nz`.
- ScanObjectNN (h5, read with h5py): `<root>/<variant folder>/{training,test}_objectdataset<suffix>.h5` with
  `data` [S, 2048, 3] and `label` [S]; no normals, so they are estimated (open3d, oriented outward).
- ShapeNetPart, `shapenetcore_partanno_segmentation_benchmark_v0_normal`: `<root>/synsetoffset2category.txt`,
  `<root>/train_test_split/shuffled_{train,val,test}_file_list.json`, `<root>/<synset>/<id>.txt` with lines
  `x y z nx ny nz part`.
A missing or malformed layout raises `DatasetError` naming the path and the data card.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from common.errors import DatasetError
from common.pointcloud.io import estimate_normals
from common.pointcloud.ops import farthest_point_sample
from common.pointcloud.transforms import normalize_unit_sphere

SCANOBJECTNN_VARIANTS = {  # variant -> (folder, file suffix)
    "PB_T50_RS": ("main_split", "_augmentedrot_scale75"),
    "OBJ_BG": ("main_split", ""),
    "OBJ_ONLY": ("main_split_nobg", ""),
}
# ShapeNetPart's fixed part ids of each category (categories in alphabetical order, 50 parts in all)
SHAPENETPART_PARTS = {
    "Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7], "Car": [8, 9, 10, 11], "Chair": [12, 13, 14, 15],
    "Earphone": [16, 17, 18], "Guitar": [19, 20, 21], "Knife": [22, 23], "Lamp": [24, 25, 26, 27],
    "Laptop": [28, 29], "Motorbike": [30, 31, 32, 33, 34, 35], "Mug": [36, 37], "Pistol": [38, 39, 40],
    "Rocket": [41, 42, 43], "Skateboard": [44, 45, 46], "Table": [47, 48, 49],
}  # fmt: skip


def _need(path: Path, expected: str, card: str) -> Path:
    if not path.exists():
        raise DatasetError(path, expected, card=card)
    return path


def resample(cloud: np.ndarray, n: int, sampling: str) -> np.ndarray:
    """n rows of `cloud` [M, C]: `first` rows (the official fast path), or farthest point sampling on xyz (the
    official `use_uniform_sample`); fewer than n rows are repeated cyclically."""
    if len(cloud) < n:
        return cloud[np.arange(n) % len(cloud)]
    if sampling == "first":
        return cloud[:n]
    idx = farthest_point_sample(torch.from_numpy(cloud[None, :, :3]).double(), n)[0].numpy()
    return cloud[idx]


def _finish(cloud: np.ndarray) -> np.ndarray:
    xyz, normals = cloud[:, :3], cloud[:, 3:6]
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    return np.concatenate([normalize_unit_sphere(xyz), normals], 1).astype(np.float32)


def _text_rows(path: Path, delimiter: str | None, columns: int, card: str) -> np.ndarray:
    try:
        rows = np.loadtxt(path, delimiter=delimiter, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as e:
        raise DatasetError(path, f"{columns} numeric columns per line", card=card, problem=f"unreadable ({e})") from e
    if rows.shape[1] < columns or not np.isfinite(rows).all():
        raise DatasetError(path, f"{columns} finite numeric columns per line", card=card, problem="malformed rows")
    return rows


def read_modelnet(root, split: str, n: int, classes: int = 40, sampling: str = "fps", progress: Callable = iter):
    """ModelNet{40,10} normal_resampled: (points [S, n, 6], label [S], class names)."""
    root, card = Path(root), "modelnet40"
    names_file = _need(root / f"modelnet{classes}_shape_names.txt", "modelnet40_normal_resampled", card)
    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    ids_file = _need(root / f"modelnet{classes}_{split}.txt", f"the {split} list of modelnet{classes}", card)
    ids = [line.strip() for line in ids_file.read_text().splitlines() if line.strip()]
    points, labels = [], []
    for shape_id in progress(ids):
        name = shape_id.rsplit("_", 1)[0]
        if name not in names:
            raise DatasetError(ids_file, f"ids <class>_<number> of the classes in {names_file.name}", card, shape_id)
        rows = _text_rows(_need(root / name / f"{shape_id}.txt", "x,y,z,nx,ny,nz lines", card), ",", 6, card)
        points.append(_finish(resample(rows[:, :6], n, sampling)))
        labels.append(names.index(name))
    return np.stack(points), np.array(labels, dtype=np.int64), names


def read_scanobjectnn(root, split: str, n: int, variant: str = "PB_T50_RS"):
    """ScanObjectNN h5 of `variant`: (points [S, n, 6] with estimated normals, label [S])."""
    import h5py

    folder, suffix = SCANOBJECTNN_VARIANTS[variant]
    name = {"train": "training", "test": "test"}[split]
    path = Path(root) / folder / f"{name}_objectdataset{suffix}.h5"
    _need(path, "ScanObjectNN h5 (data, label)", "scanobjectnn")
    try:
        with h5py.File(path, "r") as f:
            data, label = np.asarray(f["data"], dtype=np.float64), np.asarray(f["label"], dtype=np.int64).reshape(-1)
    except (OSError, KeyError) as e:
        raise DatasetError(path, "an h5 file with datasets 'data' [S, P, 3] and 'label' [S]", "scanobjectnn",
                           problem=f"unreadable ({e})") from e  # fmt: skip
    if data.ndim != 3 or data.shape[2] < 3 or len(data) != len(label):
        raise DatasetError(path, "'data' [S, P, 3] and 'label' [S]", "scanobjectnn", problem=f"shapes {data.shape}")
    points = []
    for cloud in data[..., :3]:
        cloud = resample(cloud, n, "first")
        points.append(_finish(np.concatenate([cloud, estimate_normals(cloud)], 1)))
    return np.stack(points), label


def read_shapenetpart(root, split: str, n: int, seed: int = 0):
    """ShapeNetPart (normal layout): (points [S, n, 6], category [S], parts [S, n], category names). Shapes with
    fewer than n points are sampled with replacement, others without (seeded)."""
    root, card = Path(root), "shapenetpart"
    cats = _need(root / "synsetoffset2category.txt", "shapenetcore_partanno_segmentation_benchmark_v0_normal", card)
    synsets = dict(line.split()[::-1] for line in cats.read_text().splitlines() if line.strip())  # synset -> name
    names = sorted(synsets.values())
    if set(names) != set(SHAPENETPART_PARTS):
        raise DatasetError(cats, f"the 16 categories {sorted(SHAPENETPART_PARTS)}", card, problem=f"found {names}")
    split_file = _need(root / "train_test_split" / f"shuffled_{split}_file_list.json", "the split lists", card)
    entries = json.loads(split_file.read_text())
    rng = np.random.default_rng(seed)
    points, categories, parts = [], [], []
    for entry in entries:
        synset, shape_id = entry.split("/")[-2:]
        if synset not in synsets:
            raise DatasetError(split_file, f"entries shape_data/<synset>/<id> of {cats.name}", card, entry)
        rows = _text_rows(_need(root / synset / f"{shape_id}.txt", "x y z nx ny nz part lines", card), None, 7, card)
        pick = rng.choice(len(rows), n, replace=len(rows) < n)
        points.append(_finish(rows[pick, :6]))
        parts.append(rows[pick, 6].astype(np.int64))
        categories.append(names.index(synsets[synset]))
    return np.stack(points), np.array(categories, dtype=np.int64), np.stack(parts), names

"""CIFAR-10 / CIFAR-100 in their "python version" layout, read without running pickled code.

The batches are Python pickles of dicts holding bytes, lists and one numpy array. They are read with a
restricted unpickler that only rebuilds numpy arrays and dtypes, so a crafted file cannot run code
(the project loads nothing that could execute on load).

Layout (root is the extracted folder, or the folder that contains it):
    cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}   keys data, labels, label_names
    cifar-100-python/{train, test, meta}                               keys data, fine_labels, fine_label_names
`data` is [N, 3072] uint8, channel-planar (1024 red, 1024 green, 1024 blue), rows of 32 pixels.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from common.errors import DatasetError

CARD = "cifar"
LAYOUTS = {
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "train": [f"data_batch_{i}" for i in range(1, 6)],
        "test": ["test_batch"],
        "meta": "batches.meta",
        "labels": "labels",
        "names": "label_names",
    },
    "cifar100": {
        "folder": "cifar-100-python",
        "train": ["train"],
        "test": ["test"],
        "meta": "meta",
        "labels": "fine_labels",
        "names": "fine_label_names",
    },
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes; a pure function
}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def _load(path: Path, expected: str) -> dict:
    if not path.is_file():
        raise DatasetError(path, expected, CARD)
    try:
        with path.open("rb") as f:
            obj = _ArraysOnly(f, encoding="bytes").load()
    except Exception as exc:  # noqa: BLE001 - any failure is a malformed batch file
        raise DatasetError(path, expected, CARD, problem=f"unreadable CIFAR batch ({exc})") from None
    if not isinstance(obj, dict):
        raise DatasetError(path, expected, CARD, problem="not a dict of arrays")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def find_root(root: Path, name: str) -> Path:
    """The folder holding the batch files: `root` itself or `root/<cifar-10-batches-py|cifar-100-python>`."""
    sub = Path(root) / LAYOUTS[name]["folder"]
    return sub if sub.is_dir() else Path(root)


def read_cifar(root: str | Path, name: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Images [N, 32, 32, 3] uint8, labels [N] int64 and class names of CIFAR `name`'s `split` (train|test)."""
    layout = LAYOUTS[name]
    folder = find_root(Path(root), name)
    expected = f"{name} python-version batch files {layout['train'] + layout['test'] + [layout['meta']]} in {folder}"
    images, labels = [], []
    for file in layout[split]:
        batch = _load(folder / file, expected)
        data, y = batch.get("data"), batch.get(layout["labels"])
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.shape[1] != 3072 or y is None:
            raise DatasetError(
                folder / file, expected, CARD, problem=f"batch without 'data' [N, 3072] and '{layout['labels']}'"
            )
        if len(y) != len(data):
            raise DatasetError(folder / file, expected, CARD, problem=f"{len(data)} images but {len(y)} labels")
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(y, dtype=np.int64))
    meta = _load(folder / layout["meta"], expected)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(layout["names"], [])]
    y = np.concatenate(labels)
    if not names or y.min() < 0 or y.max() >= len(names):
        raise DatasetError(
            folder / layout["meta"], expected, CARD, problem="class names missing or labels out of range"
        )
    return np.concatenate(images), y, names

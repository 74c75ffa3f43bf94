"""Tiny synthetic datasets on disk for the vision tests: MNIST-format IDX, CIFAR python batches, image folders.

Every image is unique: its first pixels encode its index, so splits can be checked for overlap.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def unique_images(n: int, size: int, chans: int | None = None, offset: int = 0) -> np.ndarray:
    """[n, size, size(, chans)] uint8 with the index (plus offset) in the first two pixels."""
    rng = np.random.default_rng(offset)
    shape = (n, size, size) if chans is None else (n, size, size, chans)
    x = rng.integers(0, 256, shape, dtype=np.uint8)
    ids = np.arange(offset, offset + n)
    x.reshape(n, -1)[:, 0], x.reshape(n, -1)[:, 1] = ids // 256, ids % 256
    return x


def image_id(image_uint8: np.ndarray) -> int:
    flat = image_uint8.reshape(-1)
    return int(flat[0]) * 256 + int(flat[1])


def write_mnist(root: Path, n_train: int = 60, n_test: int = 20, size: int = 28, gz: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    labels = {"train": np.arange(n_train) % 10, "t10k": np.arange(n_test) % 10}
    images = {"train": unique_images(n_train, size), "t10k": unique_images(n_test, size, offset=10_000)}
    for split in ("train", "t10k"):
        for kind, array in (("images-idx3", images[split]), ("labels-idx1", labels[split].astype(np.uint8))):
            data = idx_bytes(array)
            name = f"{split}-{kind}-ubyte"
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                (root / name).write_bytes(data)
    return root


def write_cifar10(root: Path, per_batch: int = 10, n_test: int = 10) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(1, 6):
        x = unique_images(per_batch, 32, 3, offset=i * 100).transpose(0, 3, 1, 2).reshape(per_batch, -1)
        batch = {b"data": x, b"labels": [j % 10 for j in range(per_batch)]}
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch, protocol=2))
    x = unique_images(n_test, 32, 3, offset=9000).transpose(0, 3, 1, 2).reshape(n_test, -1)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": x, b"labels": [j % 10 for j in range(n_test)]}))
    names = [
        n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    ]
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": names}))
    return root


def write_image_folder(root: Path, classes=("cat", "dog", "fox"), per_class: int = 6, size: int = 20) -> Path:
    for split, n in (("train", per_class), ("val", 2)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                x = unique_images(1, size, 3, offset=c * 100 + i + (0 if split == "train" else 50))[0]
                Image.fromarray(x).save(root / split / name / f"{i}.png")
    return root

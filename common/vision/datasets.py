"""torch Datasets of the vision apps: in-memory uint8 arrays (IDX, CIFAR) and image files (folders).

Items are `(image float32 [C, H, W], label int64)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from common.data.images import open_image
from common.vision.transforms import normalize


class ArrayDataset(Dataset):
    """Images [N, H, W, C] uint8 and labels [N]; `augment` (an ArrayAugment) for training, else normalise only."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment=None):
        self.images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())  # [N, C, H, W], writable
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        self.augment = augment if augment is not None and augment.active else None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        image = self.images[i]
        return (self.augment(image) if self.augment else normalize(image)), self.labels[i]


class FileDataset(Dataset):
    """Image files with labels, opened with `open_image` (16-bit grey scaled to 8 bits) and passed through
    `transform` (timm's)."""

    def __init__(self, files: list[Path], labels: list[int], transform, card: str):
        self.files, self.labels, self.transform, self.card = list(files), list(labels), transform, card

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        image = self.transform(open_image(self.files[i], card=self.card))
        return image, torch.tensor(self.labels[i], dtype=torch.long)

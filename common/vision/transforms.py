"""Image transforms of the vision apps: one normalisation everywhere, cheap tensor augmentation for the
small in-memory datasets, timm's transforms (RandAugment, random-resized crop, random erasing) for
image folders and when asked for.

Every image becomes float32 [C, H, W] normalised with MEAN = STD = 0.5 per channel (values in [-1, 1]).
The same constants serve training, evaluation and predict, so an export needs no dataset statistics.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MEAN, STD = 0.5, 0.5


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., C, H, W] -> float32 in [-1, 1]."""
    return images.float().div(255.0).sub(MEAN).div(STD)


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize [N, H, W, C] uint8 to [N, size, size, C] (bilinear, antialiased), in chunks to bound memory."""
    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = []
    for start in range(0, len(images), 4096):
        x = torch.from_numpy(images[start : start + 4096].copy()).permute(0, 3, 1, 2).float()
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


class ArrayAugment:
    """Training augmentation of one uint8 image [C, H, W] -> float32 [C, H, W].

    Cheap tensor ops by default (pad-and-crop, horizontal flip); `auto_augment` (a timm RandAugment
    string, e.g. "rand-m9-mstd0.5-inc1") goes through PIL; `re_prob` adds timm's random erasing.
    """

    def __init__(self, crop_pad: int = 0, hflip: float = 0.0, auto_augment: str | None = None, re_prob: float = 0.0):
        self.crop_pad, self.hflip = int(crop_pad), float(hflip)
        self.rand_augment = None
        if auto_augment:
            from timm.data.auto_augment import rand_augment_transform

            self.rand_augment = rand_augment_transform(auto_augment, {"translate_const": 4, "img_mean": (128,) * 3})
        self.erase = None
        if re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            self.erase = RandomErasing(probability=re_prob, mode="pixel", device="cpu")

    @property
    def active(self) -> bool:
        return bool(self.crop_pad or self.hflip or self.rand_augment or self.erase)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.rand_augment is not None:
            pil = Image.fromarray(image.permute(1, 2, 0).squeeze(-1).numpy())
            image = torch.from_numpy(np.array(self.rand_augment(pil), dtype=np.uint8)).reshape(
                image.shape[1], image.shape[2], -1
            )
            image = image.permute(2, 0, 1)
        x = normalize(image)
        if self.hflip and torch.rand(()) < self.hflip:
            x = x.flip(-1)
        if self.crop_pad:
            p = self.crop_pad
            h, w = x.shape[-2:]
            padded = F.pad(x, (p, p, p, p), value=-MEAN / STD)  # pad with black
            i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = padded[:, i : i + h, j : j + w]
        if self.erase is not None:
            x = self.erase(x)
        return x


def folder_transform(img_size: int, in_chans: int, training: bool, **aug):
    """timm's train or eval transform for PIL images of an image folder (converted to L or RGB first)."""
    from timm.data import create_transform
    from torchvision import transforms

    mode = "L" if in_chans == 1 else "RGB"
    base = create_transform(
        img_size,
        is_training=training,
        hflip=aug.get("hflip", 0.5) if training else 0.0,
        auto_augment=aug.get("auto_augment") if training else None,
        re_prob=aug.get("re_prob", 0.0) if training else 0.0,
        scale=tuple(aug.get("scale", (0.08, 1.0))),
        color_jitter=0.0,
        interpolation="bicubic",
        mean=(MEAN,) * in_chans,
        std=(STD,) * in_chans,
        crop_pct=aug.get("crop_pct", 0.875),
    )
    return transforms.Compose([transforms.Lambda(lambda im: im.convert(mode)), base])

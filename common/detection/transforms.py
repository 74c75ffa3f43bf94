"""DETR-style detection transforms (torchvision.transforms.v2, which moves the boxes with the image) and the collate.

Training (DETR's recipe, `main.py::make_coco_transforms`): horizontal flip, then with probability 1/2 a
multi-scale resize (shorter side drawn from `scales`, longer side capped at `max_size`), else resize to one of
`crop_scales`, a random crop with sides in [`crop_min`, `crop_max`] and the multi-scale resize. Boxes that
leave the crop are dropped, the others clipped (SanitizeBoundingBoxes drops anything under 1 px).
Evaluation: one resize of the shorter side to `eval_size` (longer side capped at `max_size`).

A sample leaves as `(image float32 [3, H, W] normalised with ImageNet statistics, target)`, with the target in
the shared convention: `boxes` normalised cxcywh of the transformed image, `labels` int64, `image_id`,
`orig_size` and `size` (h, w). `collate` pads a batch to its largest image and returns
`(images [B, 3, H, W], masks [B, H, W] bool True = padding, targets)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from common.errors import ConfigError, check_range

# ImageNet statistics (DETR and every ImageNet-pretrained backbone); predict and export use the same.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class RandomSizeCrop(v2.Transform):
    """DETR's RandomSizeCrop: a crop of random width and height in [min_size, max_size] (each <= the image side)."""

    def __init__(self, min_size: int, max_size: int):
        super().__init__()
        self.min_size, self.max_size = int(min_size), int(max_size)

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        ch = int(torch.randint(min(h, self.min_size), min(h, self.max_size) + 1, ()))
        cw = int(torch.randint(min(w, self.min_size), min(w, self.max_size) + 1, ()))
        top = int(torch.randint(0, h - ch + 1, ()))
        left = int(torch.randint(0, w - cw + 1, ()))
        return {"top": top, "left": left, "height": ch, "width": cw}

    def transform(self, inpt, params: dict):
        return self._call_kernel(TF.crop, inpt, **params)


def check_scales(key: str, scales: Sequence[int]) -> list[int]:
    if not scales or not all(isinstance(s, int) and s >= 8 for s in scales):
        raise ConfigError(key, scales, "a non-empty list of image sides >= 8 (pixels)")
    return [int(s) for s in scales]


def train_transform(
    scales: Sequence[int],
    max_size: int,
    crop_scales: Sequence[int] | None = None,
    crop_min: int | None = None,
    crop_max: int | None = None,
    hflip: float = 0.5,
) -> v2.Compose:
    """DETR's training augmentation on (PIL image, {"boxes": BoundingBoxes, "labels": ...})."""
    scales = check_scales("scales", scales)
    check_range("max_size", max_size, max(scales))
    check_range("hflip", hflip, 0.0, 1.0)
    multi_scale = v2.RandomShortestSize(scales, max_size=max_size, antialias=True)
    steps: list = [v2.RandomHorizontalFlip(hflip)]
    if crop_scales:
        crop_scales = check_scales("crop_scales", crop_scales)
        crop_min, crop_max = int(crop_min or min(crop_scales)), int(crop_max or max(crop_scales))
        check_range("crop_min", crop_min, 8)
        check_range("crop_max", crop_max, crop_min)
        cropped = v2.Compose(
            [v2.RandomShortestSize(crop_scales, antialias=True), RandomSizeCrop(crop_min, crop_max), multi_scale]
        )
        steps.append(v2.RandomChoice([multi_scale, cropped]))
    else:
        steps.append(multi_scale)
    return v2.Compose([*steps, v2.SanitizeBoundingBoxes(min_size=1.0)])


def eval_transform(eval_size: int, max_size: int) -> v2.Compose:
    """The fixed resize of validation, test, predict (and the export's expected input scale)."""
    check_range("eval_size", eval_size, 8)
    return v2.Compose([v2.RandomShortestSize([int(eval_size)], max_size=max(int(max_size), int(eval_size)))])


def resize_shorter(height: int, width: int, size: int, max_size: int) -> tuple[int, int]:
    """(h, w) after the eval resize (torchvision's RandomShortestSize rule), for callers without an image."""
    r = min(size / min(height, width), max_size / max(height, width))
    return int(height * r), int(width * r)


def to_model_input(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """A PIL image (or uint8 tensor [3, H, W]) -> float32 [3, H, W] normalised with MEAN/STD."""
    x = TF.to_dtype(TF.to_image(image), torch.float32, scale=True)
    return TF.normalize(x, MEAN, STD)


def apply(transform, image: Image.Image, boxes_xyxy: torch.Tensor, labels: torch.Tensor, image_id: int) -> tuple:
    """Run `transform` on an image with absolute xyxy boxes; returns (image tensor, target in the shared format)."""
    w, h = image.size
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes_xyxy.reshape(-1, 4).float(), format="XYXY", canvas_size=(h, w)),
        "labels": labels.long(),
    }
    image, target = transform(image, target)
    x = to_model_input(image)
    nh, nw = x.shape[-2:]
    boxes = box_convert(target["boxes"].as_subclass(torch.Tensor), "xyxy", "cxcywh")
    boxes = boxes / torch.tensor([nw, nh, nw, nh], dtype=torch.float32)
    return x, {
        "labels": target["labels"],
        "boxes": boxes.clamp(0.0, 1.0),
        "image_id": int(image_id),
        "orig_size": torch.tensor([h, w], dtype=torch.long),
        "size": torch.tensor([nh, nw], dtype=torch.long),
    }


def collate(batch: list[tuple[torch.Tensor, dict]], size_divisibility: int = 1) -> tuple:
    """Pad images to the batch's largest (rounded up to `size_divisibility`); masks are True on padding."""
    images = [x for x, _ in batch]
    h = max(x.shape[1] for x in images)
    w = max(x.shape[2] for x in images)
    if size_divisibility > 1:
        h = int(math.ceil(h / size_divisibility) * size_divisibility)
        w = int(math.ceil(w / size_divisibility) * size_divisibility)
    padded = images[0].new_zeros(len(images), 3, h, w)
    masks = torch.ones(len(images), h, w, dtype=torch.bool)
    for i, x in enumerate(images):
        padded[i, :, : x.shape[1], : x.shape[2]] = x
        masks[i, : x.shape[1], : x.shape[2]] = False
    return padded, masks, [t for _, t in batch]

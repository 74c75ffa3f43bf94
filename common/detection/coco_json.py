"""COCO detection json: read once, checked field by field, then indexed by pycocotools.

Every source of COCODetectionDataModule (COCO 2017, the converted VOC/deepforest folders, the generated shapes)
goes through `read_annotations`, so a malformed file fails at setup with a DatasetError naming the file, the
entry (image, annotation or category id), the field and what was expected, not with a KeyError or a reshape
error in the first batch. Boxes without area inside their image are valid COCO but show no object: `clip_boxes`
leaves them out of the batches' targets, and `read_annotations` counts them once in a warning.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
from pycocotools.coco import COCO

from common.detection.evaluator import quiet
from common.errors import DatasetError

FILE_EXPECTED = "a COCO detection json: an object with lists 'images', 'annotations' and 'categories'"
SINGULAR = {"images": "image", "annotations": "annotation", "categories": "category"}
_MISSING = object()


def clip_boxes(xywh: torch.Tensor, size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Absolute xyxy boxes [n, 4] clipped to their image (`size` (width, height): one [2] or one per box [n, 2]),
    and which of them keep a positive area."""
    xyxy = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    xyxy = torch.minimum(xyxy.clamp_min(0), torch.cat([size, size], -1))
    return xyxy, (xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1])


def read_annotations(path: Path, card: str) -> COCO:
    """The pycocotools index of the json at `path`, after `check_annotations`; warns once about boxes it drops."""
    try:
        dataset = json.loads(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise DatasetError(path, FILE_EXPECTED, card, problem=f"cannot read as JSON ({exc})") from None
    check_annotations(path, dataset, card)
    coco = COCO()
    coco.dataset = dataset
    with quiet():
        coco.createIndex()
    dropped, total = degenerate_boxes(coco)
    if dropped:
        warnings.warn(
            f"{path}: {dropped} of {total} non-crowd boxes have no area inside their image and are left out of the "
            f"batches' targets; COCOeval scores the file as it is (see data_cards/{card}.md)",
            stacklevel=2,
        )
    return coco


def degenerate_boxes(coco: COCO) -> tuple[int, int]:
    """(boxes `clip_boxes` drops, all non-crowd boxes) of a checked index."""
    anns = [a for a in coco.dataset.get("annotations", []) if not a["iscrowd"]]
    if not anns:
        return 0, 0
    boxes = np.array([a["bbox"] for a in anns], dtype=np.float32)
    image_ids = np.array(sorted(coco.imgs))
    sizes = np.array([[coco.imgs[i]["width"], coco.imgs[i]["height"]] for i in image_ids.tolist()], dtype=np.float32)
    rows = np.searchsorted(image_ids, np.array([a["image_id"] for a in anns]))
    _, keep = clip_boxes(torch.from_numpy(boxes), torch.from_numpy(sizes[rows]))
    return int((~keep).sum()), len(anns)


def check_annotations(path: Path, dataset, card: str) -> None:
    """Raise DatasetError at the first entry pycocotools or the data module could not use (see module docstring)."""
    if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), list) for k in ("images", "categories")):
        raise DatasetError(path, FILE_EXPECTED, card, problem="not a COCO detection json")
    named = {"id": (_is_int, "an integer"), "name": (_is_str, "a name")}
    categories = _check_entries(path, card, dataset, "categories", named)
    images = _check_entries(
        path, card, dataset, "images",
        {
            "id": (_is_int, "an integer"),
            "file_name": (_is_str, "the image's file name in the split's image folder"),
            "width": (_is_positive, "the image width in pixels, a number > 0"),
            "height": (_is_positive, "the image height in pixels, a number > 0"),
        },
    )  # fmt: skip
    _check_entries(
        path, card, dataset, "annotations",
        {
            "id": (_is_int, "an integer"),
            "image_id": (lambda v: _is_int(v) and v in images, f"the id of one of the {len(images)} images"),
            "category_id": (
                lambda v: _is_int(v) and v in categories,
                f"the id of a category in 'categories' ({_preview(categories)})",
            ),
            "bbox": (_is_box, "[x, y, width, height] in pixels: 4 finite numbers"),
            "area": (lambda v: _is_number(v) and v >= 0, "a number >= 0 (the object's area in pixels)"),
            "iscrowd": (lambda v: v in (0, 1), "0 or 1"),
        },
    )  # fmt: skip


def _check_entries(path: Path, card: str, dataset: dict, kind: str, fields: dict) -> set:
    """Check every entry of `dataset[kind]` (absent: none) against `fields`; return the set of their ids."""
    entries = dataset.get(kind, [])
    if not isinstance(entries, list):
        raise DatasetError(path, FILE_EXPECTED, card, problem=f"{kind!r} is not a list")
    ids = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise DatasetError(path, f"{kind!r}: a list of objects", card, problem=f"{kind}[{i}] is {_show(entry)}")
        for name, (ok, expected) in fields.items():
            value = entry.get(name, _MISSING)
            if not ok(value):
                where = _where(kind, i, entry)
                raise DatasetError(path, f"{name!r}: {expected}", card, problem=f"{where}: {name!r} is {_show(value)}")
        if entry["id"] in ids:
            where = _where(kind, i, entry)
            raise DatasetError(path, f"unique {SINGULAR[kind]} ids", card, problem=f"{where}: duplicate id")
        ids.add(entry["id"])
    return ids


def _where(kind: str, index: int, entry: dict) -> str:
    """How a user finds the entry in the file: its id (and image), else its position in the list."""
    if not _is_int(entry.get("id")):
        return f"{kind}[{index}]"
    image = entry.get("image_id") if kind == "annotations" else None
    return f"{SINGULAR[kind]} {entry['id']}" + (f" of image {image}" if _is_int(image) else "")


def _show(value) -> str:
    text = "missing" if value is _MISSING else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _preview(ids: set) -> str:
    ordered = sorted(ids)
    return ", ".join(map(str, ordered[:10])) + (", ..." if len(ordered) > 10 else "")


# exact types, not isinstance: JSON gives only int, float, bool (an int subclass, excluded), str, list, dict
def _is_int(value) -> bool:
    return type(value) is int


def _is_number(value) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_positive(value) -> bool:
    return _is_number(value) and value > 0


def _is_str(value) -> bool:
    return isinstance(value, str) and value != ""


def _is_box(value) -> bool:
    return type(value) is list and len(value) == 4 and all(map(_is_number, value))

"""COCO box AP through pycocotools' COCOeval, quiet, with predictions gathered over batches (and DDP ranks).

`CocoEvaluator(coco_gt)` collects detections per image (absolute xyxy boxes in the original image, scores,
COCO category ids) and `compute()` scores the images it saw, returning
`{"map", "map_50", "map_75", "map_small", "map_medium", "map_large"}` (COCOeval's stats[0:6], maxDets=100).
COCOeval reports -1 where a metric is undefined (no ground truth in that area range, e.g. `map_large` on
the 128-px shapes set); those become NaN here, so an undefined number never reads as a real 0.
No detections at all gives 0.0 for every defined metric (COCOeval cannot load an empty result list).
"""

from __future__ import annotations

import contextlib
import copy
import io
import math

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

METRICS = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large")


@contextlib.contextmanager
def quiet():
    """pycocotools prints progress to stdout on every call; keep it out of the training log."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def coco_from_dict(dataset: dict) -> COCO:
    """A pycocotools COCO index over an in-memory COCO dict (images, annotations, categories)."""
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    coco.dataset.setdefault("annotations", [])
    for i, ann in enumerate(coco.dataset["annotations"]):
        ann.setdefault("id", i + 1)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
    with quiet():
        coco.createIndex()
    return coco


def load_coco(path) -> COCO:
    with quiet():
        return COCO(str(path))


def merge_over_ranks(per_image: dict) -> dict:
    """{image id: value} of every DDP rank merged on every rank (a collective); the dict itself in one process."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return per_image
    parts: list = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, per_image)
    return {k: v for part in parts for k, v in part.items()}


class CocoEvaluator:
    """Collects detections per image and scores them against `coco_gt` over the images it was given.

    Only images passed to `update` are evaluated (so a validation limited to a few batches is scored on those
    images alone); an image passed twice (DDP samplers pad with repeats) keeps its last detections.
    """

    def __init__(self, coco_gt: COCO):
        self.coco_gt = coco_gt
        self.results: dict[int, list[dict]] = {}

    def reset(self) -> None:
        self.results = {}

    def update(self, image_ids, results: list[dict], label_to_category=None) -> None:
        """Add one batch: `results[i]` = {"boxes" xyxy abs [k, 4], "scores" [k], "labels" [k]} of `image_ids[i]`.

        `labels` are contiguous class indices mapped through `label_to_category` (a list) to COCO category ids;
        without it they are taken as category ids already.
        """
        for image_id, res in zip(image_ids, results):
            boxes = torch.as_tensor(res["boxes"]).detach().float().cpu().reshape(-1, 4)
            xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
            scores = torch.as_tensor(res["scores"]).detach().float().cpu().tolist()
            labels = torch.as_tensor(res["labels"]).detach().cpu().long().tolist()
            self.results[int(image_id)] = [
                {
                    "image_id": int(image_id),
                    "category_id": int(label_to_category[label]) if label_to_category is not None else int(label),
                    "bbox": box,
                    "score": float(score),
                }
                for box, score, label in zip(xywh, scores, labels)
            ]

    def gather(self) -> None:
        """Under DDP, collect every rank's detections on every rank (each rank saw a shard of the images; an image
        that DistributedSampler's padding repeats on two ranks comes back once, keyed by its id)."""
        self.results = merge_over_ranks(self.results)

    def compute(self) -> dict[str, float]:
        """COCOeval box metrics over the images seen; undefined ones (-1 in COCOeval) are NaN."""
        image_ids = sorted(self.results)
        detections = [d for dets in self.results.values() for d in dets]
        if not detections:
            return {name: (0.0 if self._defined(name, image_ids) else math.nan) for name in METRICS}
        with quiet():
            coco_dt = self.coco_gt.loadRes(detections)
            ev = COCOeval(self.coco_gt, coco_dt, iouType="bbox")
            ev.params.imgIds = image_ids
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return {name: (math.nan if value < 0 else float(value)) for name, value in zip(METRICS, ev.stats[:6])}

    def _defined(self, name: str, image_ids: list[int]) -> bool:
        """Whether COCOeval would define `name`: some non-crowd ground truth in its area range."""
        ranges = {"map_small": (0, 32**2), "map_medium": (32**2, 96**2), "map_large": (96**2, 1e10)}
        anns = self.coco_gt.loadAnns(self.coco_gt.getAnnIds(imgIds=image_ids, iscrowd=False)) if image_ids else []
        if name not in ranges:
            return bool(anns)
        low, high = ranges[name]
        return any(low <= a["area"] <= high for a in anns)

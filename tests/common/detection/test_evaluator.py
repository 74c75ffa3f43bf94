"""CocoEvaluator against values worked out by hand from COCOeval's definition (101-point interpolated AP)."""

from __future__ import annotations

import math

import pytest
import torch

from common.detection.evaluator import CocoEvaluator, coco_from_dict

# Two images, 100x100; image 1: a 20x20 box (small) and a 40x40 box (medium) of category 1; image 2: nothing.
GT = {
    "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [50, 50, 40, 40], "area": 1600, "iscrowd": 0},
    ],
    "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
}


def evaluate(detections: dict[int, list[tuple[list[float], float, int]]], label_to_category=None) -> dict:
    """detections: image id -> [(xyxy, score, label)]."""
    ev = CocoEvaluator(coco_from_dict(GT))
    for image_id, dets in detections.items():
        boxes = torch.tensor([d[0] for d in dets], dtype=torch.float32).reshape(-1, 4)
        scores = torch.tensor([d[1] for d in dets])
        labels = torch.tensor([d[2] for d in dets], dtype=torch.long)
        ev.update([image_id], [{"boxes": boxes, "scores": scores, "labels": labels}], label_to_category)
    return ev.compute()


def test_perfect_predictions_score_one_and_large_is_undefined():
    m = evaluate({1: [([10, 10, 30, 30], 0.9, 0), ([50, 50, 90, 90], 0.8, 0)], 2: []}, label_to_category=[1, 2])
    for key in ("map", "map_50", "map_75", "map_small", "map_medium"):
        assert m[key] == pytest.approx(1.0)
    assert math.isnan(m["map_large"])  # no ground truth >= 96² pixels: COCOeval's -1 becomes NaN


def test_shifted_box_passes_only_the_thresholds_below_its_iou():
    """The small box shifted by 4 px: IoU = 16*20 / (2*400 - 320) = 2/3, a hit at IoU 0.50..0.65 (4 of 10
    thresholds). The medium box is exact. Per threshold: AP 1 where both hit; else recall 1/2 at precision 1
    (scored higher) -> 101-point AP = 51/101. So map = (4 + 6 * 51/101) / 10, map_50 = 1, map_75 = 51/101."""
    m = evaluate({1: [([50, 50, 90, 90], 0.9, 1), ([14, 10, 34, 30], 0.8, 1)]})
    half = 51 / 101
    assert m["map_50"] == pytest.approx(1.0)
    assert m["map_75"] == pytest.approx(half)
    assert m["map"] == pytest.approx((4 + 6 * half) / 10)
    assert m["map_small"] == pytest.approx(0.4)  # the small box alone: AP 1 at 4 thresholds, 0 at 6
    assert m["map_medium"] == pytest.approx(1.0)


def test_false_positive_on_an_empty_image_lowers_precision():
    """A confident false positive on image 2 ranked first: precision 1/2, 2/3 at recall 1/2, 1 -> AP = 2/3."""
    m = evaluate({1: [([10, 10, 30, 30], 0.8, 1), ([50, 50, 90, 90], 0.7, 1)], 2: [([0, 0, 30, 30], 0.95, 1)]})
    # interpolated precision is 2/3 at every recall point up to 1 (101 points, all reached)
    assert m["map_50"] == pytest.approx(2 / 3, abs=1e-6)


def test_zero_detections_give_zero_not_an_error():
    m = evaluate({1: [], 2: []})
    assert m["map"] == 0.0 and m["map_50"] == 0.0 and m["map_small"] == 0.0
    assert math.isnan(m["map_large"])


def test_only_seen_images_count_and_repeats_do_not_duplicate():
    ev = CocoEvaluator(coco_from_dict(GT))
    result = {"boxes": torch.tensor([[10.0, 10, 30, 30], [50, 50, 90, 90]]), "scores": torch.tensor([0.9, 0.8])}
    result["labels"] = torch.tensor([1, 1])
    ev.update([1], [result])
    ev.update([1], [result])  # a DDP sampler's padding repeat
    assert sum(len(d) for d in ev.results.values()) == 2
    assert ev.compute()["map"] == pytest.approx(1.0)  # image 2 was never given, so it is not scored

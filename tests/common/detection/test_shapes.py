"""The embedded shapes set: deterministic bytes, boxes inside the image and tight around the drawn shape."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from common.detection import shapes
from common.errors import ConfigError

COUNTS = {"train": 6, "val": 3, "test": 3}
SEED3 = shapes.ShapesSpec(seed=3)


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    return shapes.shapes_dir(tmp_path_factory.mktemp("a"), COUNTS, SEED3, show_progress=False)


def test_same_seed_same_bytes_other_seed_other_images(built, tmp_path):
    again = shapes.shapes_dir(tmp_path / "b", COUNTS, SEED3, show_progress=False)
    assert digest(built) == digest(again)
    other = shapes.shapes_dir(tmp_path / "c", COUNTS, shapes.ShapesSpec(seed=4), show_progress=False)
    assert digest(other)["train/000000.png"] != digest(built)["train/000000.png"]


def test_folder_name_encodes_the_settings(built):
    """The name is the cache key of sets already built on disk: it must not change for the same settings."""
    assert built.name == "shapes_v2_s3_128px_6-3-3_o1-4_z12-60"
    spec = shapes.ShapesSpec(seed=1, image_size=96, min_objects=0, max_objects=2, min_size=20, max_size=64)
    assert spec.folder_name({"train": 10, "val": 2, "test": 1}) == "shapes_v2_s1_96px_10-2-1_o0-2_z20-64"


def test_larger_split_only_appends(built, tmp_path):
    bigger = shapes.shapes_dir(tmp_path / "d", COUNTS | {"train": 8}, SEED3, show_progress=False)
    small, big = digest(built), digest(bigger)
    assert all(big[f"train/{i:06d}.png"] == small[f"train/{i:06d}.png"] for i in range(6))


def test_annotations_are_coco_and_inside_the_images(built):
    for split, count in COUNTS.items():
        coco = json.loads((built / "annotations" / f"instances_{split}.json").read_text())
        assert len(coco["images"]) == count
        assert [c["name"] for c in coco["categories"]] == list(shapes.CLASSES)
        sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        per_image = {i: 0 for i in sizes}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            width, height = sizes[ann["image_id"]]
            assert x >= 0 and y >= 0 and x + w <= width and y + h <= height
            assert 0 < ann["area"] <= w * h and 1 <= ann["category_id"] <= 5
            per_image[ann["image_id"]] += 1
        assert all(1 <= n <= 4 for n in per_image.values())


def test_box_is_the_tight_bound_of_the_drawn_shape():
    """Re-render one image with its generator; each shape's mask equals its box bounds, and the pixels of the
    last-drawn shape carry one flat colour inside its box (earlier shapes may be partly covered)."""
    photos = shapes.load_backgrounds()
    for index in range(5):
        image, objects = shapes.render_image(shapes.image_rng(0, "train", index), photos)
        for obj in objects:
            x, y, w, h = obj["bbox"]
            assert 12 * 0.5 <= max(w, h) <= 61  # circumscribed diameter 12..60 px; a square's side is d/sqrt(2)
        x, y, w, h = objects[-1]["bbox"]
        colours = {tuple(c) for c in image[y : y + h, x : x + w].reshape(-1, 3)}
        flat = max(colours, key=lambda c: (image[y : y + h, x : x + w] == c).all(-1).sum())
        mask = (image == flat).all(-1)
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()) == (x, y, w, h)
        assert mask.sum() == objects[-1]["area"]


def test_polygons_render_where_the_box_says():
    poly = shapes.shape_polygon("square", (32, 32), 20 * np.sqrt(2), 0.0)  # side 20, axis aligned
    mask = shapes._mask(poly, 64)
    assert shapes._box(mask) == [22, 22, 21, 21]  # PIL fills the outline's end pixels too


def test_overlap_is_bounded(built):
    coco = json.loads((built / "annotations" / "instances_train.json").read_text())
    by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann["bbox"])
    for boxes in by_image.values():
        for i in range(len(boxes)):
            for j in range(i):
                assert shapes._iou(boxes[i], boxes[j]) <= 0.3


def test_images_are_rgb_png_of_the_set_size(built):
    with Image.open(built / "val" / "000000.png") as im:
        assert im.mode == "RGB" and im.size == (128, 128)


def test_bad_settings_raise_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="max_size"):
        shapes.ShapesSpec(max_size=200)
    with pytest.raises(ConfigError, match="num_val"):
        shapes.shapes_dir(tmp_path, COUNTS | {"val": 0})

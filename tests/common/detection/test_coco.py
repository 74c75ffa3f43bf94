"""COCO data: boxes follow the augmentations, collate pads with masks, the datamodule maps ids and splits."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from common.detection.coco import COCODetectionDataModule
from common.detection.transforms import MEAN, STD, apply, collate, eval_transform, train_transform
from common.errors import ConfigError, DatasetError

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
RECTS = [[10, 12, 50, 40], [60, 20, 110, 90], [20, 60, 45, 95]]  # xyxy on a 120 x 100 (w x h) image


def painted():
    """A black image with one coloured rectangle per box (label i has colour i)."""
    array = np.zeros((100, 120, 3), np.uint8)
    for (x0, y0, x1, y1), c in zip(RECTS, COLOURS):
        array[y0:y1, x0:x1] = c
    return Image.fromarray(array), torch.tensor(RECTS, dtype=torch.float32), torch.arange(3)


def denormalise(x: torch.Tensor) -> np.ndarray:
    return ((x * torch.tensor(STD)[:, None, None] + torch.tensor(MEAN)[:, None, None]) * 255).permute(1, 2, 0).numpy()


def test_flip_twice_is_identity_and_once_mirrors():
    image, boxes, labels = painted()
    x0, t0 = apply(v2.Identity(), image, boxes, labels, 1)
    x2, t2 = apply(v2.Compose([v2.RandomHorizontalFlip(1.0), v2.RandomHorizontalFlip(1.0)]), image, boxes, labels, 1)
    torch.testing.assert_close(x2, x0)
    torch.testing.assert_close(t2["boxes"], t0["boxes"])
    _, t1 = apply(v2.RandomHorizontalFlip(1.0), image, boxes, labels, 1)
    torch.testing.assert_close(t1["boxes"][:, 0], 1 - t0["boxes"][:, 0])
    torch.testing.assert_close(t1["boxes"][:, 1:], t0["boxes"][:, 1:])


@pytest.mark.parametrize("seed", range(12))
def test_train_augmentation_keeps_boxes_on_their_objects(seed):
    """After flip/resize/crop every kept box's centre shows its own colour, and no object visible over a sizeable
    area has lost its box (crops drop only boxes outside)."""
    torch.manual_seed(seed)
    tf = train_transform([64, 80, 96], 160, crop_scales=[80, 100], crop_min=30, crop_max=80)
    image, boxes, labels = painted()
    x, t = apply(tf, image, boxes, labels, 7)
    pixels = denormalise(x)
    h, w = x.shape[-2:]
    assert t["size"].tolist() == [h, w] and t["orig_size"].tolist() == [100, 120]
    assert torch.all(t["boxes"] >= 0) and torch.all(t["boxes"] <= 1)
    for (cx, cy, _, _), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
        centre = pixels[min(int(cy * h), h - 1), min(int(cx * w), w - 1)]
        assert np.abs(centre - COLOURS[label]).max() < 60
    for label, colour in enumerate(COLOURS):
        visible = (np.abs(pixels - colour).max(-1) < 30).sum()
        if visible > 20:
            assert label in t["labels"].tolist()


def test_eval_resize_scales_boxes_exactly():
    image, boxes, labels = painted()
    x, t = apply(eval_transform(50, 200), image, boxes, labels, 3)
    assert tuple(x.shape) == (3, 50, 60)
    expected = torch.tensor([[30, 26, 40, 28], [85, 55, 50, 70], [32.5, 77.5, 25, 35]]) / torch.tensor([120, 100] * 2)
    torch.testing.assert_close(t["boxes"], expected)


def test_collate_pads_and_masks():
    a = (torch.ones(3, 4, 6), {"image_id": 1})
    b = (torch.ones(3, 5, 3), {"image_id": 2})
    images, masks, targets = collate([a, b])
    assert images.shape == (2, 3, 5, 6) and masks.dtype == torch.bool
    assert not masks[0, :4, :6].any() and masks[0, 4:].all()
    assert not masks[1, :5, :3].any() and masks[1, :, 3:].all()
    assert torch.equal(images[masks.unsqueeze(1).expand_as(images)], torch.zeros(int(masks.sum()) * 3))
    _, masks32, _ = collate([a, b], size_divisibility=4)
    assert masks32.shape == (2, 8, 8)
    assert [t["image_id"] for t in targets] == [1, 2]


# ---- the datamodule on a tiny COCO-2017-layout folder -----------------------------------------------
def write_coco(root, n_train=10, n_val=3):
    """Categories with ids 3 and 7 (not contiguous), one crowd annotation, one image without objects."""
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    for split, n in (("train", n_train), ("val", n_val)):
        (root / f"{split}2017").mkdir()
        images, anns = [], []
        for i in range(n):
            Image.fromarray(np.full((40, 60, 3), 40 * (i % 5), np.uint8)).save(root / f"{split}2017" / f"{i}.jpg")
            images.append({"id": 100 + i, "file_name": f"{i}.jpg", "width": 60, "height": 40})
            if i == 1:
                continue
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 7, "bbox": [5, 5, 20, 10],
                         "area": 200, "iscrowd": 0})  # fmt: skip
            anns.append({"id": len(anns) + 1, "image_id": 100 + i, "category_id": 3, "bbox": [30, 10, 25, 25],
                         "area": 625, "iscrowd": int(i == 0)})  # fmt: skip
        coco = {"images": images, "annotations": anns, "categories": cats}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))


def test_coco_source_maps_ids_holds_out_val_and_drops_crowd(tmp_path):
    write_coco(tmp_path)
    dm = COCODetectionDataModule(source="coco", root=str(tmp_path), val_fraction=0.3, eval_size=40, seed=1)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.model_kwargs() == {"num_classes": 2, "class_names": ["cat", "dog"]}  # category-id order: 3, 7
    assert dm.label_to_category == [3, 7]
    train, val, test = (dm.splits[s].image_ids for s in ("train", "val", "test"))
    assert len(val) == 3 and not set(train) & set(val) and sorted(train + val) == list(range(100, 110))
    assert test == [100, 101, 102] and dm.splits["test"].image_dir.name == "val2017"
    boxes, labels = dm.splits["test"].annotations(100)  # image 100: its cat is a crowd region
    assert labels.tolist() == [1] and boxes.tolist() == [[5.0, 5.0, 25.0, 15.0]]
    assert len(dm.splits["test"].annotations(101)[0]) == 0
    images, masks, targets = next(iter(dm.test_dataloader()))
    assert images.shape[:2] == (3, 3) and masks.shape == (3, *images.shape[-2:])
    t = targets[2]
    assert t["labels"].tolist() == [1, 0] and t["image_id"] == 102 and t["size"].tolist() == [40, 60]
    torch.testing.assert_close(t["boxes"][0], torch.tensor([15 / 60, 10 / 40, 20 / 60, 10 / 40]))
    coco_gt, ids = dm.coco_gt("val")
    assert ids == val and set(ids) <= set(coco_gt.getImgIds())


def test_embedded_source_and_limits(tmp_path):
    dm = COCODetectionDataModule(data_dir=str(tmp_path), num_train=4, num_val=2, num_test=2, batch_size=3,
                                 limit_train=3, seed=0)  # fmt: skip
    dm.prepare_data()
    dm.setup("fit")
    assert dm.dataset_name == "detection_shapes" and dm.model_kwargs()["num_classes"] == 5
    assert len(dm.splits["train"]) == 3 and len(dm.splits["val"]) == 2
    images, masks, targets = next(iter(dm.train_dataloader()))
    assert len(targets) == 3 and all(t["boxes"].shape[1] == 4 for t in targets)
    for t, m in zip(targets, masks):
        h, w = t["size"].tolist()
        assert not m[:h, :w].any() and m.sum() == m.numel() - h * w


def test_missing_coco_and_bad_config_are_clear(tmp_path):
    with pytest.raises(DatasetError, match="coco2017"):
        COCODetectionDataModule(source="coco", root=str(tmp_path / "nowhere")).prepare_data()
    with pytest.raises(ConfigError, match="root"):
        COCODetectionDataModule(source="coco")
    with pytest.raises(ConfigError, match="source"):
        COCODetectionDataModule(source="voc2012")
    with pytest.raises(ConfigError, match="scales"):
        COCODetectionDataModule(scales=[])

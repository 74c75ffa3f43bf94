"""Malformed COCO annotation files fail at setup with a DatasetError naming the file, the entry, the field and
what was expected; degenerate boxes are dropped from the targets and counted once."""

from __future__ import annotations

import json
import warnings

import pytest

from common.detection.coco import COCODetectionDataModule
from common.errors import DatasetError
from tests.common.detection.test_coco import write_coco


def datamodule(root) -> COCODetectionDataModule:
    return COCODetectionDataModule(source="coco", root=str(root), val_fraction=0.3, eval_size=40, seed=1)


def edit(path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def first_ann(data) -> dict:
    return data["annotations"][0]  # id 1, of image 100


@pytest.mark.parametrize(
    "change, words",
    [
        (lambda d: first_ann(d).update(category_id=99), ["annotation 1 of image 100", "'category_id' is 99", "3, 7"]),
        (lambda d: first_ann(d).update(bbox=["5", 5, 20, 10]), ["annotation 1 of image 100", "'bbox' is ['5', 5"]),
        (lambda d: first_ann(d).update(bbox=[5, 5]), ["annotation 1 of image 100", "'bbox' is [5, 5]", "4 finite"]),
        (lambda d: first_ann(d).update(bbox=[5, 5, float("nan"), 1]), ["'bbox' is [5, 5, nan, 1]"]),
        (lambda d: first_ann(d).update(image_id=555), ["annotation 1 of image 555", "'image_id' is 555"]),
        (lambda d: first_ann(d).pop("iscrowd"), ["annotation 1 of image 100", "'iscrowd' is missing", "0 or 1"]),
        (lambda d: d["images"][3].pop("file_name"), ["image 103", "'file_name' is missing", "file name"]),
        (lambda d: d["images"][2].update(width="60"), ["image 102", "'width' is '60'", "width in pixels"]),
        (lambda d: d["images"][4].update(id=100), ["image 100", "duplicate id", "unique image ids"]),
        (lambda d: d["images"][4].pop("id"), ["images[4]", "'id' is missing"]),
        (lambda d: d["categories"][0].pop("name"), ["category 7", "'name' is missing"]),
        (lambda d: d["annotations"].append(7), ["annotations[", "is 7", "a list of objects"]),
        (lambda d: d.pop("images"), ["not a COCO detection json", "'images'"]),
    ],
)
def test_malformed_annotations_name_file_entry_and_field(tmp_path, change, words):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_train2017.json"
    edit(path, change)
    with pytest.raises(DatasetError) as err:
        datamodule(tmp_path).setup("fit")
    assert err.value.path == path and err.value.card == "coco2017"
    for word in words:
        assert word in str(err.value)


def test_truncated_json_names_the_file(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"
    path.write_text(path.read_text()[:-40])
    with pytest.raises(DatasetError, match="cannot read as JSON") as err:
        datamodule(tmp_path).setup("fit")
    assert err.value.path == path and "data_cards/coco2017.md" in str(err.value)


def test_test_split_categories_must_be_known_to_train(tmp_path):
    """val2017 may list a category of its own, but an annotation of it has no label in the model's classes."""
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"

    def new_category(d):
        d["categories"].append({"id": 11, "name": "cow"})
        first_ann(d)["category_id"] = 11

    edit(path, new_category)
    with pytest.raises(DatasetError, match=r"unknown categories \[11\]") as err:
        datamodule(tmp_path).setup("fit")
    assert err.value.path == path and "instances_train2017.json" in str(err.value)


def test_degenerate_boxes_are_dropped_and_counted_once(tmp_path):
    write_coco(tmp_path)
    path = tmp_path / "annotations" / "instances_val2017.json"

    def degenerate(d):  # images are 60 x 40; image 100 keeps its dog, image 102 its cat
        d["annotations"][2]["bbox"] = [5, 5, 0, 10]  # image 102's dog: zero width
        d["annotations"].append(dict(d["annotations"][0], id=50, bbox=[70, 5, 10, 10]))  # right of the image
        d["annotations"].append(dict(d["annotations"][0], id=51, bbox=[-20, 5, 10, 10]))  # left of the image
        d["annotations"].append(dict(d["annotations"][0], id=52, bbox=[70, 5, 9, 9], iscrowd=1))  # crowd: uncounted

    edit(path, degenerate)
    dm = datamodule(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dm.setup("fit")
    messages = [str(w.message) for w in caught if "no area inside their image" in str(w.message)]
    assert messages == [f"{path}: 3 of 5 non-crowd boxes have no area inside their image and are left out of the "
                        "batches' targets; COCOeval scores the file as it is (see data_cards/coco2017.md)"]  # fmt: skip
    test = dm.splits["test"]
    assert test.annotations(100)[1].tolist() == [1]  # the dog (label 1 = id 7); the two boxes outside are gone
    assert test.annotations(102)[1].tolist() == [0]  # the cat (label 0 = id 3); the zero-width dog is gone
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        dm.setup("fit")  # set up once: no second report
    assert not [w for w in again if "no area" in str(w.message)]

"""Pascal-VOC reading, tiling, splits, and the DeepForest wheel's tree crowns converted to COCO."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from common.detection import voc
from common.detection.coco import COCODetectionDataModule
from common.errors import DatasetError

GOOD = """<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth></size>
{objects}</annotation>"""
OBJECT = "<object><name>{cls}</name><difficult>{d}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>" \
         "<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"  # fmt: skip


def xml(name="a.jpg", w=100, h=80, boxes=((10, 10, 30, 40, "Tree", 0),)) -> str:
    objects = "".join(OBJECT.format(x0=a, y0=b, x1=c, y1=d, cls=n, d=f) for a, b, c, d, n, f in boxes)
    return GOOD.format(name=name, w=w, h=h, objects=objects)


def test_reads_a_voc_file(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(xml(boxes=((10, 10, 30, 40, "Tree", 0), (50, 5, 60, 9, "Dead", 1))))
    ann = voc.read_voc_xml(path)
    assert (ann["filename"], ann["width"], ann["height"]) == ("a.jpg", 100, 80)
    assert ann["objects"] == [
        {"name": "Tree", "bbox": [10.0, 10.0, 20.0, 30.0], "difficult": False},
        {"name": "Dead", "bbox": [50.0, 5.0, 10.0, 4.0], "difficult": True},
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<annotation><size><width>10", "malformed XML"),
        ("<notvoc/>", "root element"),
        (xml().replace("<xmin>10</xmin>", ""), "missing <xmin>"),
        (xml().replace("<ymax>40</ymax>", "<ymax>forty</ymax>"), "<ymax> is 'forty'"),
        (xml().replace("<width>100</width>", ""), "missing <width>"),
        (xml(boxes=((30, 10, 10, 40, "Tree", 0),)), "empty box"),
    ],
)
def test_malformed_files_name_the_file_and_field(tmp_path, text, problem):
    path = tmp_path / "bad.xml"
    path.write_text(text)
    with pytest.raises(DatasetError, match="deepforest_trees") as err:
        voc.read_voc_xml(path)
    assert problem in str(err.value) and str(path) in str(err.value)


def test_tiles_cover_the_image_and_clip_boxes():
    assert voc.tile_origins(400, 400, 100) == [0]
    assert voc.tile_origins(1000, 400, 100) == [0, 300, 600]
    assert voc.tile_origins(1001, 400, 100) == [0, 300, 600, 601]
    objects = [{"name": "Tree", "bbox": [380, 10, 40, 20], "difficult": False},  # half inside the tile
               {"name": "Tree", "bbox": [395, 10, 40, 20], "difficult": False}]  # 5/40 inside: a remnant  # fmt: skip
    kept = voc.clip_boxes(objects, 0, 0, 400, 400, min_visible=0.4)
    assert kept == [{"name": "Tree", "bbox": [380, 10, 20, 20], "difficult": False}]
    shifted = voc.clip_boxes(objects, 300, 0, 400, 400, min_visible=0.4)
    assert [o["bbox"] for o in shifted] == [[80, 10, 40, 20], [95, 10, 40, 20]]


def test_greedy_split_by_source_follows_object_shares():
    sources = [{"stem": s, "ann": {"objects": [0] * n}} for s, n in (("a", 574), ("b", 279), ("c", 61), ("d", 37))]
    splits = voc.split_sources(sources)
    assert {k: [s["stem"] for s in v] for k, v in splits.items()} == {"train": ["a", "d"], "val": ["c"], "test": ["b"]}


def write_voc_folder(root, n=5, with_sets=False):
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    for i in range(n):
        Image.fromarray(np.full((80, 100, 3), 30 * i, np.uint8)).save(root / "JPEGImages" / f"im{i}.jpg")
        boxes = [(5, 5, 25, 25, "Tree", 0)] * (i + 1) + [(50, 30, 90, 70, "Snag", int(i == 0))]
        (root / "Annotations" / f"im{i}.xml").write_text(xml(name=f"im{i}.jpg", boxes=boxes))
    if with_sets:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        for split, stems in (("train", "im0 im1 im2"), ("val", "im3"), ("test", "im4")):
            (root / "ImageSets" / "Main" / f"{split}.txt").write_text(stems.replace(" ", "\n"))


def test_user_voc_folder_with_image_sets(tmp_path):
    write_voc_folder(tmp_path / "voc", with_sets=True)
    dm = COCODetectionDataModule(source="deepforest", root=str(tmp_path / "voc"), data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.model_kwargs() == {"num_classes": 2, "class_names": ["Snag", "Tree"]}
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    coco = dm.splits["train"].coco
    crowd = [a for a in coco.dataset["annotations"] if a["iscrowd"]]
    assert len(crowd) == 1 and crowd[0]["category_id"] == 1  # the difficult Snag of im0
    first = dm.splits["train"].image_ids[0]
    assert dm.splits["train"].annotations(first)[1].tolist() == [1]  # difficult object left out of training


def test_user_voc_folder_missing_image_is_clear(tmp_path):
    write_voc_folder(tmp_path / "voc", n=2)
    (tmp_path / "voc" / "JPEGImages" / "im1.jpg").unlink()
    with pytest.raises(DatasetError, match="im1"):
        COCODetectionDataModule(source="deepforest", root=str(tmp_path / "voc"), data_dir=str(tmp_path)).prepare_data()


def test_deepforest_wheel_converts_to_tiled_coco(tmp_path):
    folder = voc.deepforest_dir(tmp_path, None, tile_size=400, overlap=100)
    counts = {}
    for split in voc.SPLITS:
        coco = json.loads((folder / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in coco["categories"]] == ["Tree"]
        sizes = {im["id"]: (im["width"], im["height"]) for im in coco["images"]}
        for ann in coco["annotations"]:
            x, y, w, h = ann["bbox"]
            assert x >= 0 and y >= 0 and x + w <= sizes[ann["image_id"]][0] and y + h <= sizes[ann["image_id"]][1]
            assert w >= 1 and h >= 1
        counts[split] = (len(coco["images"]), coco["info"]["sources"])
        for im in coco["images"]:
            assert (folder / split / im["file_name"]).is_file()
    sources = [s for _, srcs in counts.values() for s in srcs]
    assert len(sources) == len(set(sources)) == 4  # each source image in exactly one split
    assert counts["val"][0] >= 1 and counts["test"][0] >= 1 and counts["train"][0] > counts["test"][0]

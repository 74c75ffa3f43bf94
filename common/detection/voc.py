"""Pascal-VOC XML boxes -> COCO json + image tiles; the DeepForest tree-crown set that ships in its wheel.

`read_voc_xml` parses one annotation file and names the file and the field on anything malformed. Sources:
- the `deepforest` wheel's `deepforest/data/` folder, located with importlib.util.find_spec (the package is
  never imported: it was installed without its dependencies): every `<stem>.xml` with a `<stem>.png` beside
  it (aerial RGB of NEON sites; one class "Tree": SOAP_061's "Alive"/"Dead" crowns are merged into it);
- a user's VOC folder (`root`): `Annotations/*.xml`, images in `JPEGImages/` (by the XML's filename, else by
  stem), optional `ImageSets/Main/{train,val,test}.txt` naming each split's stems.

VOC corners are taken as pixel coordinates as written (DeepForest writes 0-based ones), box = (xmin, ymin,
xmax - xmin, ymax - ymin). `difficult` objects become COCO crowd regions: left out of training targets and
ignored by COCOeval, as in VOC's own evaluation. Images larger than `tile_size` are cut into overlapping
tiles; boxes are clipped to each tile and kept if at least `min_visible` of their area lies inside it.
Splits go by source image (tiles of one image never straddle splits): ImageSets when present, else sources
sorted by object count are dealt greedily to the split furthest below its share of objects (70/10/20).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from common.data.cache import build_once
from common.errors import DatasetError

CARD = "deepforest_trees"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
SHARES = {"train": 0.7, "val": 0.1, "test": 0.2}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


# ---- one XML file ----------------------------------------------------------------------------------
def _text(node, field: str, path: Path, where: str) -> str:
    child = node.find(field)
    if child is None or child.text is None or not child.text.strip():
        raise DatasetError(path, f"a Pascal VOC annotation with <{field}> in {where}", CARD, f"missing <{field}>")
    return child.text.strip()


def _number(node, field: str, path: Path, where: str) -> float:
    text = _text(node, field, path, where)
    try:
        return float(text)
    except ValueError:
        raise DatasetError(path, f"a number in <{field}> of {where}", CARD, f"<{field}> is {text!r}") from None


def read_voc_xml(path: str | Path) -> dict:
    """{"filename", "width", "height", "objects": [{"name", "bbox" xywh, "difficult"}]} of one VOC XML file."""
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(path, "a well-formed Pascal VOC XML file", CARD, f"malformed XML ({exc})") from None
    except OSError as exc:
        raise DatasetError(path, "a readable Pascal VOC XML file", CARD, f"cannot read ({exc})") from None
    if root.tag != "annotation":
        raise DatasetError(path, "a Pascal VOC <annotation> root element", CARD, f"root element is <{root.tag}>")
    size = root.find("size")
    if size is None:
        raise DatasetError(path, "a Pascal VOC annotation with <size>", CARD, "missing <size>")
    out = {
        "filename": (root.findtext("filename") or "").strip(),
        "width": int(_number(size, "width", path, "<size>")),
        "height": int(_number(size, "height", path, "<size>")),
        "objects": [],
    }
    for i, obj in enumerate(root.findall("object")):
        where = f"<object> #{i + 1}"
        name = _text(obj, "name", path, where)
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(path, f"<bndbox> in {where}", CARD, "missing <bndbox>")
        x0, y0, x1, y1 = (_number(box, f, path, f"{where}/<bndbox>") for f in ("xmin", "ymin", "xmax", "ymax"))
        if x1 <= x0 or y1 <= y0:
            raise DatasetError(path, f"xmax > xmin and ymax > ymin in {where}", CARD, f"empty box {[x0, y0, x1, y1]}")
        difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
        out["objects"].append({"name": name, "bbox": [x0, y0, x1 - x0, y1 - y0], "difficult": difficult})
    return out


# ---- tiling ----------------------------------------------------------------------------------------
def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length): stride tile - overlap, the last one flush with the end."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


def clip_boxes(objects: list[dict], x0: int, y0: int, w: int, h: int, min_visible: float) -> list[dict]:
    """Objects shifted into the window (x0, y0, w, h) and clipped; those with < min_visible of their area dropped."""
    out = []
    for obj in objects:
        bx, by, bw, bh = obj["bbox"]
        cx0, cy0 = max(bx, x0), max(by, y0)
        cx1, cy1 = min(bx + bw, x0 + w), min(by + bh, y0 + h)
        if cx1 - cx0 < 1 or cy1 - cy0 < 1 or (cx1 - cx0) * (cy1 - cy0) < min_visible * bw * bh:
            continue
        out.append(obj | {"bbox": [cx0 - x0, cy0 - y0, cx1 - cx0, cy1 - cy0]})
    return out


# ---- sources and splits ----------------------------------------------------------------------------
def deepforest_data_dir() -> Path:
    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(
            "deepforest", "the deepforest==2.1.0 wheel (installed by make setup, pip install --no-deps)", CARD
        )
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _find_image(folder: Path, stem: str, filename: str = "") -> Path | None:
    if filename and (folder / filename).is_file() and Path(filename).suffix.lower() in IMAGE_SUFFIXES:
        return folder / filename
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def find_sources(root: Path | None) -> tuple[list[dict], dict[str, list[str]] | None]:
    """[{"stem", "image", "ann"}] and the ImageSets split lists (or None) of the wheel's folder or a VOC root."""
    if root is None:
        folder = deepforest_data_dir()
        xml_dir, image_dir, sets_dir = folder, folder, None
    else:
        folder = Path(root)
        xml_dir, image_dir, sets_dir = folder / "Annotations", folder / "JPEGImages", folder / "ImageSets" / "Main"
        if not xml_dir.is_dir():
            raise DatasetError(xml_dir, "a Pascal VOC folder: Annotations/*.xml and JPEGImages/", CARD)
    sources = []
    for xml in sorted(xml_dir.glob("*.xml")):
        ann = read_voc_xml(xml)
        image = _find_image(image_dir, xml.stem, ann["filename"])
        if image is not None:
            sources.append({"stem": xml.stem, "image": image, "ann": ann})
        elif root is not None:
            raise DatasetError(image_dir / (ann["filename"] or xml.stem), f"the image of {xml.name}", CARD)
    if not sources:
        raise DatasetError(xml_dir, "Pascal VOC XML files with their images", CARD, "no annotated images found")
    split_lists = None
    if sets_dir is not None and all((sets_dir / f"{s}.txt").is_file() for s in SPLITS):
        split_lists = {s: (sets_dir / f"{s}.txt").read_text().split() for s in SPLITS}
    return sources, split_lists


def split_sources(sources: list[dict], split_lists: dict[str, list[str]] | None = None) -> dict[str, list[dict]]:
    """Sources per split: by ImageSets lists, else dealt by object count (see the module docstring)."""
    if split_lists is not None:
        by_stem = {s["stem"]: s for s in sources}
        return {split: [by_stem[stem] for stem in split_lists[split] if stem in by_stem] for split in SPLITS}
    out: dict[str, list[dict]] = {split: [] for split in SPLITS}
    counts = {split: 0 for split in SPLITS}
    total = max(1, sum(len(s["ann"]["objects"]) for s in sources))
    for source in sorted(sources, key=lambda s: (-len(s["ann"]["objects"]), s["stem"])):
        split = max(SPLITS, key=lambda k: SHARES[k] - counts[k] / total)  # ties: the order of SPLITS
        out[split].append(source)
        counts[split] += len(source["ann"]["objects"])
    return out


def write_coco_tiles(
    target: Path,
    sources: dict[str, list[dict]],
    tile_size: int,
    overlap: int,
    min_visible: float = 0.4,
    one_class: str | None = None,
) -> None:
    """Tiles as PNG under target/{split}/ and COCO json under target/annotations/instances_{split}.json.

    `one_class` renames every object's class (the wheel's SOAP_061 labels crowns "Alive"/"Dead"; all are trees).
    """
    if one_class is not None:
        sources = {
            split: [
                s | {"ann": s["ann"] | {"objects": [o | {"name": one_class} for o in s["ann"]["objects"]]}}
                for s in group
            ]
            for split, group in sources.items()
        }
    names = sorted({o["name"] for split in sources.values() for s in split for o in s["ann"]["objects"]})
    category = {name: i + 1 for i, name in enumerate(names)}
    (target / "annotations").mkdir(parents=True, exist_ok=True)
    for split, split_sources_ in sources.items():
        (target / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for source in split_sources_:
            try:
                with Image.open(source["image"]) as im:
                    photo = im.convert("RGB")
            except OSError as exc:
                raise DatasetError(source["image"], "a readable image", CARD, f"unreadable image ({exc})") from None
            w, h = photo.size
            for ty in tile_origins(h, tile_size, overlap):
                for tx in tile_origins(w, tile_size, overlap):
                    tw, th = min(tile_size, w), min(tile_size, h)
                    image_id = len(images) + 1
                    file_name = f"{source['stem']}_{tx}_{ty}.png"
                    photo.crop((tx, ty, tx + tw, ty + th)).save(target / split / file_name, compress_level=1)
                    images.append({"id": image_id, "file_name": file_name, "width": tw, "height": th})
                    for obj in clip_boxes(source["ann"]["objects"], tx, ty, tw, th, min_visible):
                        annotations.append(
                            {
                                "id": len(annotations) + 1,
                                "image_id": image_id,
                                "category_id": category[obj["name"]],
                                "bbox": [float(v) for v in obj["bbox"]],
                                "area": float(obj["bbox"][2] * obj["bbox"][3]),
                                "iscrowd": int(obj["difficult"]),
                            }
                        )
        coco = {
            "info": {
                "description": "Pascal VOC converted by manyheads",
                "sources": [s["stem"] for s in split_sources_],
            },
            "images": images,
            "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in category.items()],
        }
        (target / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def deepforest_dir(data_dir: str | Path, root: str | Path | None, tile_size: int = 400, overlap: int = 100) -> Path:
    """Build (once) and return the COCO-layout folder of the DeepForest wheel's images (or a VOC `root`)."""
    origin = "wheel" if root is None else hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:10]
    target = Path(data_dir) / f"deepforest_v{FORMAT_VERSION}_{origin}_t{tile_size}_o{overlap}"

    def build(tmp: Path) -> None:
        sources, split_lists = find_sources(Path(root) if root else None)
        one_class = "Tree" if root is None else None
        write_coco_tiles(tmp, split_sources(sources, split_lists), tile_size, overlap, one_class=one_class)

    return build_once(target, build)

"""The embedded detection set: coloured shapes on textured photographs, as COCO json + PNG files.

Five classes (circle, square, triangle, star, cross) of random size, colour and rotation are drawn on
backgrounds cropped from the photographs scikit-image ships inside its wheel (read from the package's
own folder, so nothing is downloaded). Objects may overlap a little (box IoU <= `max_iou`, and every
shape keeps most of its pixels visible), so the set needs real set prediction but stays learnable by a
small CPU DETR in minutes.

Each image is drawn from its own generator seeded with (seed, split, index): the same seed gives the same
bytes and annotations, and a larger split only appends images. Boxes are the tight pixel bounds of each
drawn shape (absolute xywh, COCO convention: x0, y0 of the first covered pixel, w, h in pixels); `area` is
the shape's pixel count. Layout (COCO 2017 style) under the build folder:

    annotations/instances_{train,val,test}.json
    {train,val,test}/000000.png ...
"""

from __future__ import annotations

import colorsys
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from common.data.cache import build_once
from common.errors import DatasetError, check_range

CLASSES = ("circle", "square", "triangle", "star", "cross")
SPLITS = ("train", "val", "test")
CARD = "detection_shapes"
FORMAT_VERSION = 2  # 2: moon.png (no stated licence) left out of the backgrounds
# Photographs inside scikit-image's wheel (skimage/data/*.png|jpg), textures and scenes, grey or colour; only
# those its docstrings call CC0, public domain or free of known copyright restrictions (data_cards/detection_shapes.md).
BACKGROUNDS = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "rocket.jpg",
)  # fmt: skip
MIN_VISIBLE = 0.6  # fraction of a shape's pixels that later shapes may not cover


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def load_backgrounds(folder: Path | None = None) -> list[np.ndarray]:
    """The background photographs as RGB uint8 arrays [H, W, 3]."""
    folder = Path(folder or skimage_data_dir())
    out = []
    for name in BACKGROUNDS:
        path = folder / name
        if not path.is_file():
            raise DatasetError(path, "scikit-image's bundled photographs (pip install scikit-image)", CARD)
        with Image.open(path) as im:
            out.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
    return out


# ---- shapes as polygons ----------------------------------------------------------------------------
def _star(n_points: int = 5, inner: float = 0.45) -> np.ndarray:
    angles = np.arange(2 * n_points) * math.pi / n_points - math.pi / 2
    radius = np.where(np.arange(2 * n_points) % 2 == 0, 1.0, inner)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], 1)


def _cross(arm: float = 0.33) -> np.ndarray:
    a = arm
    return np.array(
        [[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]],
        dtype=float,
    )


# Unit outlines (radius 1 around the origin); the circle is drawn as a 48-gon so all shapes rotate alike.
OUTLINES = {
    "circle": np.stack([np.cos(t := np.linspace(0, 2 * math.pi, 48, endpoint=False)), np.sin(t)], 1),
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], dtype=float) / math.sqrt(2),
    "triangle": np.array([[math.cos(a), math.sin(a)] for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]),
    "star": _star(),
    "cross": _cross() / math.sqrt(2),
}


def shape_polygon(name: str, center: tuple[float, float], size: float, angle: float) -> np.ndarray:
    """Vertices [K, 2] (x, y) of shape `name` whose circumscribed circle has diameter `size`, rotated by `angle`."""
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return OUTLINES[name] @ rot.T * (size / 2) + np.asarray(center)


def _mask(poly: np.ndarray, size: int) -> np.ndarray:
    im = Image.new("L", (size, size), 0)
    ImageDraw.Draw(im).polygon([tuple(p) for p in poly.tolist()], fill=255)
    return np.asarray(im) > 0


def _box(mask: np.ndarray) -> list[int] | None:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _iou(a: list[int], b: list[int]) -> float:
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


# ---- one image -------------------------------------------------------------------------------------
def _background(rng: np.random.Generator, photos: list[np.ndarray], size: int) -> np.ndarray:
    """A random crop of a random photograph, resized to `size` and flattened in contrast (so shapes show)."""
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(size, h, w), min(h, w, 3 * size) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
    contrast = rng.uniform(0.4, 0.8)
    array = np.asarray(crop, dtype=np.float32)
    return (array.mean() + contrast * (array - array.mean())).clip(0, 255)


def _colour(rng: np.random.Generator, local_mean: np.ndarray) -> np.ndarray:
    """A saturated colour at least some distance away from the background around the shape."""
    best, best_dist = None, -1.0
    for _ in range(8):
        hue, sat, val = rng.random(), rng.uniform(0.5, 1.0), rng.uniform(0.3, 1.0)
        rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val)) * 255
        dist = float(np.linalg.norm(rgb - local_mean))
        if dist > 120:
            return rgb
        if dist > best_dist:
            best, best_dist = rgb, dist
    return best


def render_image(
    rng: np.random.Generator,
    photos: list[np.ndarray],
    image_size: int = 128,
    min_objects: int = 1,
    max_objects: int = 4,
    min_size: int = 12,
    max_size: int = 60,
    max_iou: float = 0.3,
) -> tuple[np.ndarray, list[dict]]:
    """One image (uint8 [S, S, 3]) and its objects [{"label", "bbox" xywh, "area"}], in drawing order."""
    canvas = _background(rng, photos, image_size)
    n_target = int(rng.integers(min_objects, max_objects + 1))
    masks, objects = [], []
    for _ in range(12 * n_target):  # rejection sampling of placements; a crowded image may end up with fewer
        if len(objects) == n_target:
            break
        label = int(rng.integers(len(CLASSES)))
        size = float(rng.uniform(min_size, max_size))
        angle = float(rng.uniform(0, 2 * math.pi))
        half = size / 2
        center = (rng.uniform(half, image_size - half), rng.uniform(half, image_size - half))
        mask = _mask(shape_polygon(CLASSES[label], center, size, angle), image_size)
        box = _box(mask)
        if box is None or any(_iou(box, o["bbox"]) > max_iou for o in objects):
            continue
        if any((m & ~mask).sum() < MIN_VISIBLE * o["area"] for m, o in zip(masks, objects)):
            continue
        # the earlier shapes lose the pixels this one covers
        masks = [m & ~mask for m in masks]
        masks.append(mask)
        objects.append({"label": label, "bbox": box, "area": int(mask.sum())})
        canvas[mask] = _colour(rng, canvas[mask].mean(0))
    return canvas.round().astype(np.uint8), objects


# ---- the dataset on disk ---------------------------------------------------------------------------
def categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(CLASSES)]


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


@dataclass(frozen=True)
class ShapesSpec:
    """The generator settings of one shapes set (everything but the split sizes); bad values raise ConfigError.

    seed: the set's seed; image_size: image side in px; min/max_objects: objects per image (a crowded image may
    get fewer); min/max_size: a shape's circumscribed diameter in px.
    """

    seed: int = 0
    image_size: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 12
    max_size: int = 60

    def __post_init__(self):
        check_range("image_size", self.image_size, 32)
        check_range("min_objects", self.min_objects, 0)
        check_range("max_objects", self.max_objects, max(1, self.min_objects))
        check_range("min_size", self.min_size, 4)
        check_range("max_size", self.max_size, self.min_size, self.image_size)

    def render_options(self) -> dict:
        """The keyword arguments of `render_image`."""
        return {k: v for k, v in asdict(self).items() if k != "seed"}

    def folder_name(self, counts: dict[str, int]) -> str:
        """The build folder's name: it encodes every setting, so a cached set is reused only for the same ones.
        Keep it stable: existing caches are found by this name."""
        return (
            f"shapes_v{FORMAT_VERSION}_s{self.seed}_{self.image_size}px_{counts['train']}-{counts['val']}-{counts['test']}"
            f"_o{self.min_objects}-{self.max_objects}_z{self.min_size}-{self.max_size}"
        )


def write_split(
    target: Path, split: str, count: int, spec: ShapesSpec, photos: list[np.ndarray], progress=None
) -> dict:
    """Draw `count` images of `split` into `target/split/` and return its COCO dict."""
    (target / split).mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for index in range(count):
        image, objects = render_image(image_rng(spec.seed, split, index), photos, **spec.render_options())
        file_name = f"{index:06d}.png"
        Image.fromarray(image).save(target / split / file_name, compress_level=1)
        h, w = image.shape[:2]
        images.append({"id": index + 1, "file_name": file_name, "width": w, "height": h})
        for obj in objects:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": obj["label"] + 1,
                    "bbox": obj["bbox"],
                    "area": obj["area"],
                    "iscrowd": 0,
                }
            )
        if progress is not None:
            progress()
    info = {"description": "manyheads embedded detection shapes", "version": FORMAT_VERSION, "seed": spec.seed}
    return {"info": info, "images": images, "annotations": annotations, "categories": categories()}


def build_shapes(target: Path, counts: dict[str, int], spec: ShapesSpec, show_progress: bool = True) -> None:
    """Write all splits into `target` (called by build_once on a temporary folder)."""
    from rich.progress import Progress

    photos = load_backgrounds()
    (target / "annotations").mkdir(parents=True, exist_ok=True)
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task("building detection_shapes", total=sum(counts.values()))
        for split in SPLITS:
            coco = write_split(target, split, counts[split], spec, photos, lambda: bar.advance(task))
            (target / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))


def shapes_dir(
    data_dir: str | Path, counts: dict[str, int], spec: ShapesSpec = ShapesSpec(), show_progress: bool = True
) -> Path:
    """Build (once) and return the folder of the shapes set with `counts` images per split and settings `spec`."""
    for split in SPLITS:
        check_range(f"num_{split}", counts[split], 1)
    return build_once(
        Path(data_dir) / spec.folder_name(counts), lambda tmp: build_shapes(tmp, counts, spec, show_progress)
    )

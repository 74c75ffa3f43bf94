"""COCO-format detection data for the DETR apps: the dataset (pycocotools) and `COCODetectionDataModule`.

Sources (`source=`), each with its data card:
- `embedded` (default, `detection_shapes`): the generated shapes set (common/detection/shapes.py), built once
  into `data_dir`. Splits train/val/test as generated.
- `deepforest` (`deepforest_trees`): the aerial tree-crown images with Pascal-VOC boxes that ship inside the
  `deepforest` wheel (never imported, only its data folder is read), or, with `root=PATH`, your own VOC folder
  (JPEGImages/ Annotations/ ImageSets/Main/); converted once to COCO json + tiles (common/detection/voc.py).
- `coco` (`coco2017`): COCO 2017 as distributed, read in place from `root`:
  `annotations/instances_{train,val}2017.json`, `train2017/`, `val2017/`. Test = val2017 (test-dev has no public
  labels); val = a seeded `val_fraction` of train2017's images, held out of training.

Labels are contiguous 0..C-1 in category-id order; `label_to_category` maps back for COCOeval and
`class_names` names them. Crowd annotations are left out of training targets (COCOeval still uses them as
ignore regions). Images without objects stay in (DETR learns "nothing here" from them too).
Batches follow common/detection/transforms.py: `(images, masks, targets)`. Training order and augmentation are
seeded per (seed, epoch[, image]), so `ckpt_path=last` resumes with the same batches and crops as an
uninterrupted run.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from common.data.cards import DataCardMixin
from common.data.images import open_image
from common.data.loaders import SplitDataLoaders
from common.data.samplers import EpochShuffle
from common.detection import shapes
from common.detection.coco_json import clip_boxes, read_annotations
from common.detection.transforms import apply, collate, eval_transform, train_transform
from common.errors import ConfigError, DatasetError, check_choice, check_range

SOURCES = {"embedded": "detection_shapes", "deepforest": "deepforest_trees", "coco": "coco2017"}
SPLITS = ("train", "val", "test")


class COCODetection(Dataset):
    """Images of one split with their COCO annotations, read through `transform` (see transforms.apply).

    With `augment_seed`, item keys may be `epoch * len + index` (from EpochIndexSampler) and the random
    augmentation of each item is drawn from torch's RNG seeded with (augment_seed, epoch, index): a run
    resumed from a checkpoint augments every later epoch exactly as the uninterrupted run would.
    """

    def __init__(
        self, coco, image_dir: Path, image_ids, category_ids: list[int], transform, card: str, augment_seed=None
    ):
        self.coco, self.image_dir, self.transform, self.card = coco, Path(image_dir), transform, card
        self.image_ids = [int(i) for i in image_ids]
        self.cat_to_label = {int(c): i for i, c in enumerate(category_ids)}
        self.augment_seed = augment_seed

    def __len__(self) -> int:
        return len(self.image_ids)

    def annotations(self, image_id: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Non-crowd boxes (absolute xyxy, clipped to the image, empty ones dropped) and contiguous labels."""
        info = self.coco.imgs[image_id]
        anns = [a for a in self.coco.imgToAnns.get(image_id, []) if not a["iscrowd"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes, keep = clip_boxes(boxes, torch.tensor([info["width"], info["height"]], dtype=torch.float32))
        labels = torch.tensor([self.cat_to_label[a["category_id"]] for a in anns], dtype=torch.long)
        return boxes[keep], labels[keep]

    def load_image(self, image_id: int) -> Image.Image:
        return open_image(self.image_dir / self.coco.imgs[image_id]["file_name"], "RGB", self.card)

    def __getitem__(self, key: int):
        epoch, index = divmod(int(key), len(self.image_ids))
        image_id = self.image_ids[index]
        boxes, labels = self.annotations(image_id)
        image = self.load_image(image_id)
        if self.augment_seed is None:
            return apply(self.transform, image, boxes, labels, image_id)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(np.random.SeedSequence([int(self.augment_seed), epoch, index]).generate_state(1)[0]))
            return apply(self.transform, image, boxes, labels, image_id)


class EpochIndexSampler(EpochShuffle):
    """EpochShuffle whose keys carry the epoch (`epoch * n + index`), for COCODetection's per-item seeds."""

    def __iter__(self):
        offset = self.epoch * self.n
        return (offset + i for i in super().__iter__())


def _require(path: Path, expected: str, card: str) -> Path:
    if not path.exists():
        raise DatasetError(path, expected, card)
    return path


class COCODetectionDataModule(DataCardMixin, SplitDataLoaders, L.LightningDataModule):
    DATASETS = {"detection_shapes": "detection_shapes", "deepforest_trees": "deepforest_trees", "coco2017": "coco2017"}

    def __init__(
        self,
        source: str = "embedded",
        root: str | None = None,
        data_dir: str = "data/detection_shapes",
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 200,
        image_size: int = 128,
        min_objects: int = 1,
        max_objects: int = 4,
        min_object_size: int = 12,
        max_object_size: int = 60,
        shapes_seed: int = 0,
        tile_size: int = 400,
        tile_overlap: int = 100,
        scales: tuple[int, ...] = (96, 112, 128, 144, 160),
        max_size: int = 213,
        crop_scales: tuple[int, ...] | None = (96, 128),
        crop_min: int | None = 64,
        crop_max: int | None = 128,
        hflip: float = 0.5,
        eval_size: int = 128,
        size_divisibility: int = 1,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_fraction: float = 0.05,
        seed: int = 42,
        limit_train: int | None = None,
        limit_eval: int | None = None,
    ):
        """Args beyond the module docstring:
        num_train, num_val, num_test, image_size, min/max_objects, min/max_object_size: the embedded shapes set;
            shapes_seed: its generator seed (apart from `seed`, so training seeds share one dataset).
        tile_size, tile_overlap: deepforest/VOC images larger than a tile are cut into overlapping tiles.
        scales, max_size: the multi-scale training resize (shorter side from `scales`, longer side <= max_size).
        crop_scales, crop_min, crop_max: DETR's resize-then-random-crop branch (null crop_scales: off).
        eval_size: shorter side at validation, test and predict. size_divisibility: pad batches to a multiple.
        val_fraction: for coco, the part of train2017 held out as val (seeded by `seed`).
        limit_train, limit_eval: keep only the first n images of a split (smoke tests).
        seed: the coco val hold-out and the training order (EpochShuffle: seed + epoch).
        """
        super().__init__()
        check_choice("source", source, SOURCES)
        if source == "coco" and not root:
            raise ConfigError("root", root, "the COCO 2017 folder (see data_cards/coco2017.md)")
        for key, value in (
            ("batch_size", batch_size),
            ("eval_size", eval_size),
            ("size_divisibility", size_divisibility),
        ):
            check_range(key, value, 1)
        check_range("num_workers", num_workers, 0)
        check_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("tile_size", tile_size, 32)
        check_range("tile_overlap", tile_overlap, 0, tile_size - 1)
        for key, value in (
            ("limit_train", limit_train),
            ("limit_eval", limit_eval),
            ("eval_batch_size", eval_batch_size),
        ):
            if value is not None:
                check_range(key, value, 1)
        self.source, self.root, self.data_dir = source, root, Path(data_dir)
        self.shapes_counts = {"train": int(num_train), "val": int(num_val), "test": int(num_test)}
        self.shapes_spec = shapes.ShapesSpec(
            seed=int(shapes_seed), image_size=image_size, min_objects=min_objects, max_objects=max_objects,
            min_size=min_object_size, max_size=max_object_size,
        )  # fmt: skip
        self.tile_size, self.tile_overlap = int(tile_size), int(tile_overlap)
        # built here so a bad scale list fails at instantiation, not in the first batch
        self.train_tf = train_transform(list(scales), max_size, list(crop_scales or []), crop_min, crop_max, hflip)
        self.eval_tf = eval_transform(eval_size, max_size)
        self.eval_size, self.max_size, self.size_divisibility = int(eval_size), int(max_size), int(size_divisibility)
        self.batch_size, self.eval_batch_size = int(batch_size), int(eval_batch_size or batch_size)
        self.num_workers, self.val_fraction, self.seed = int(num_workers), float(val_fraction), int(seed)
        self.limit_train, self.limit_eval = limit_train, limit_eval
        self.splits: dict[str, COCODetection] = {}
        self.category_ids: list[int] | None = None
        self.class_names: list[str] | None = None

    @property
    def dataset_name(self) -> str:
        return SOURCES[self.source]

    @property
    def label_to_category(self) -> list[int]:
        return list(self.category_ids)

    # ---- building and locating ----------------------------------------------------------------------
    def _layout_dir(self) -> Path:
        """The folder in the shared layout (annotations/instances_{split}.json + {split}/) for embedded/deepforest."""
        if self.source == "embedded":
            return shapes.shapes_dir(self.data_dir, self.shapes_counts, self.shapes_spec)
        from common.detection.voc import deepforest_dir

        return deepforest_dir(self.data_dir, self.root, self.tile_size, self.tile_overlap)

    def prepare_data(self) -> None:
        if self.source != "coco":
            self._layout_dir()
        else:
            self._coco_files()

    def _coco_files(self) -> dict[str, tuple[Path, Path]]:
        root = _require(Path(self.root), "the COCO 2017 folder", self.card)
        out = {}
        for split in ("train", "val"):
            ann = root / "annotations" / f"instances_{split}2017.json"
            _require(ann, f"COCO 2017 annotations (annotations_trainval2017.zip unpacked into {root})", self.card)
            out[split] = (ann, _require(root / f"{split}2017", f"the {split}2017 images folder", self.card))
        return out

    def _sources(self) -> dict[str, tuple]:
        """split -> (annotation file, COCO index, image folder, image ids)."""
        if self.source == "coco":
            files = self._coco_files()
            (train_json, train_dir), (val_json, val_dir) = files["train"], files["val"]
            train, test = read_annotations(train_json, self.card), read_annotations(val_json, self.card)
            ids = np.array(sorted(train.getImgIds()))
            perm = np.random.default_rng(self.seed).permutation(len(ids))
            n_val = max(1, int(round(self.val_fraction * len(ids))))
            return {
                "train": (train_json, train, train_dir, sorted(ids[perm[n_val:]].tolist())),
                "val": (train_json, train, train_dir, sorted(ids[perm[:n_val]].tolist())),
                "test": (val_json, test, val_dir, sorted(test.getImgIds())),
            }
        folder = self._layout_dir()
        out = {}
        for split in SPLITS:
            ann = _require(folder / "annotations" / f"instances_{split}.json", "COCO json annotations", self.card)
            coco = read_annotations(ann, self.card)
            out[split] = (ann, coco, folder / split, sorted(coco.getImgIds()))
        return out

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        sources = self._sources()
        train_json, train = sources["train"][:2]
        cats = train.loadCats(sorted(train.getCatIds()))
        if not cats:
            raise DatasetError(train_json, "categories", self.card, "no categories")
        self.category_ids = [int(c["id"]) for c in cats]
        self.class_names = [str(c["name"]) for c in cats]
        for split, (path, coco, image_dir, ids) in sources.items():
            unknown = {a["category_id"] for a in coco.dataset.get("annotations", [])} - set(self.category_ids)
            if unknown:
                raise DatasetError(
                    path, f"category ids of the training file {train_json.name}", self.card,
                    problem=f"annotations of unknown categories {sorted(unknown)[:10]}",
                )  # fmt: skip
            limit = self.limit_train if split == "train" else self.limit_eval
            ids = ids[:limit] if limit else ids
            tf, augment_seed = (self.train_tf, self.seed) if split == "train" else (self.eval_tf, None)
            self.splits[split] = COCODetection(coco, image_dir, ids, self.category_ids, tf, self.card, augment_seed)

    def coco_gt(self, split: str):
        """(COCO ground truth, image ids) of a split, for the evaluator."""
        self.setup()
        ds = self.splits[split]
        return ds.coco, ds.image_ids

    def model_kwargs(self) -> dict:
        """What the data decides for the model: the number of classes and their names."""
        if self.class_names is None:
            self.setup("fit")
        return {"num_classes": len(self.class_names), "class_names": list(self.class_names)}

    # ---- loaders ----------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size if split == "train" else self.eval_batch_size,
            sampler=EpochIndexSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=functools.partial(collate, size_divisibility=self.size_divisibility),
        )

"""RISurConv's data: the embedded procedural shapes (default) or a real dataset from `root`, as xyz+normal clouds
on the unit sphere, with the rotation protocols of rotation-invariance papers.

Training applies the official augmentations (point dropout, scale, shift) and then a random rotation of
`train_rotation`: `z` (about the up axis: the z/z and z/SO3 protocols) or `so3` (SO3/SO3). Validation uses
the training kind, with one fixed rotation per sample. The test split yields every sample twice, under a fixed
random `z` rotation and a fixed random `so3` rotation, so one test reports both columns of a protocol table.

Batches are dicts: `points [B, N, 6]`, `label [B]` (class; for part segmentation the object category),
`index [B]`, for part segmentation `parts [B, N]` and `category [B, C]` (one-hot); test batches hold
`points_z` and `points_so3` instead of `points`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.errors import ConfigError, DatasetError, check_choice, check_range
from common.pointcloud import datasets, shapes
from common.pointcloud.transforms import augment, random_rotations, rotate

FORMAT_VERSION = 1
UP_AXIS = {"procedural_shapes": "z", "modelnet40": "y", "modelnet10": "y", "scanobjectnn": "y", "shapenetpart": "y"}
TASKS = {"procedural_shapes": ("cls", "partseg"), "shapenetpart": ("partseg",)}


def build_shapes(out: Path, per_split: dict[str, int], num_points: int, seed: int) -> None:
    for i, (split, per_class) in enumerate(per_split.items()):
        arrays = shapes.make_split(per_class, num_points, seed=seed * 1000 + i)
        np.savez_compressed(out / f"{split}.npz", **arrays)
    (out / "classes.txt").write_text("\n".join(shapes.CLASSES) + "\n")


def load_npz(path: Path, card: str) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except Exception as e:  # noqa: BLE001
        raise DatasetError(path, "a cached split (rebuilt by deleting its folder)", card, problem=str(e)) from e


class Clouds(Dataset):
    """One split: augmentation and rotations per sample (see the module docstring)."""

    def __init__(self, arrays: dict, split: str, num_points: int, rotation: str, up: str, seed: int, aug: bool):
        self.a, self.split, self.n, self.rotation, self.up = arrays, split, num_points, rotation, up
        self.seed, self.aug = seed, aug
        self.num_categories = int(arrays["num_categories"]) if "num_categories" in arrays else None

    def __len__(self) -> int:
        return len(self.a["label"])

    def _fixed(self, kind: str, i: int) -> torch.Tensor:
        code = (self.seed * 3 + ("val", "test").index(self.split)) * 3 + ("none", "z", "so3").index(kind)
        g = torch.Generator().manual_seed(code * 10_000_000 + i)  # a fixed rotation per (seed, split, kind, sample)
        return random_rotations(kind, 1, self.up, g)[0]

    def __getitem__(self, i: int) -> dict:
        cloud = self.a["points"][i, : self.n]
        item = {"label": torch.tensor(int(self.a["label"][i])), "index": torch.tensor(i)}
        if self.split == "train":
            if self.aug:  # numpy draws seeded from torch's global generator: resumable with it
                cloud = augment(cloud, np.random.default_rng(int(torch.randint(2**31, ()))))
            item["points"] = rotate(torch.from_numpy(cloud).float(), random_rotations(self.rotation, 1, self.up)[0])
        elif self.split == "val":
            item["points"] = rotate(torch.from_numpy(cloud).float(), self._fixed(self.rotation, i))
        else:
            for kind in ("z", "so3"):
                item[f"points_{kind}"] = rotate(torch.from_numpy(cloud).float(), self._fixed(kind, i))
        if "parts" in self.a:
            item["parts"] = torch.from_numpy(self.a["parts"][i, : self.n].astype(np.int64))
            item["category"] = torch.nn.functional.one_hot(item["label"], self.num_categories).float()
        return item


class RISurConvDataModule(DataCardMixin, SplitDataLoaders, L.LightningDataModule):
    DATASETS = {
        "procedural_shapes": "procedural_shapes",
        "modelnet40": "modelnet40",
        "modelnet10": "modelnet40",
        "scanobjectnn": "scanobjectnn",
        "shapenetpart": "shapenetpart",
    }

    def __init__(
        self,
        source: str = "embedded",
        dataset: str = "procedural_shapes",
        task: str = "cls",
        root: str | None = None,
        data_dir: str = "data/risurconv",
        num_points: int = 1024,
        per_class: dict | None = None,
        train_rotation: str = "z",
        up_axis: str | None = None,
        augment: bool = True,
        sampling: str = "fps",
        scanobjectnn_variant: str = "PB_T50_RS",
        val_fraction: float = 0.1,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        check_choice("source", source, ("embedded", "real"))
        check_choice("dataset", dataset, ["procedural_shapes"] if source == "embedded" else list(self.DATASETS)[1:])
        check_choice("task", task, TASKS.get(dataset, ("cls",)))
        if source == "real" and not root:
            card = self.DATASETS[dataset]
            raise ConfigError("root", root, f"the folder of the {dataset} layout (data_cards/{card}.md)")
        check_range("num_points", num_points, 16)
        check_choice("train_rotation", train_rotation, ("none", "z", "so3"))
        check_choice("up_axis", up_axis, (None, "x", "y", "z"))
        check_choice("sampling", sampling, ("fps", "first"))
        check_choice("scanobjectnn_variant", scanobjectnn_variant, tuple(datasets.SCANOBJECTNN_VARIANTS))
        check_range("val_fraction", val_fraction, 0.0, 0.5, low_inclusive=False)
        check_range("batch_size", batch_size, 1)
        self.per_class = dict(per_class or {"train": 80, "val": 20, "test": 30})
        if set(self.per_class) != {"train", "val", "test"} or min(self.per_class.values()) < 1:
            raise ConfigError("per_class", self.per_class, "shapes per class of train, val and test, each >= 1")
        self.source, self.dataset_id, self.task, self.root = source, dataset, task, root
        self.data_dir, self.num_points, self.train_rotation = Path(data_dir), int(num_points), train_rotation
        self.up = up_axis or UP_AXIS[dataset]
        self.augment, self.sampling, self.variant = augment, sampling, scanobjectnn_variant
        self.val_fraction = val_fraction
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.splits: dict[str, dict] | None = None

    @property
    def dataset_name(self) -> str:
        return self.dataset_id

    # ---- building and reading ------------------------------------------------------------------------------
    def _cache(self) -> Path:
        if self.source == "embedded":
            sizes = "-".join(str(self.per_class[s]) for s in ("train", "val", "test"))
            name = f"procedural_shapes_v{FORMAT_VERSION}_n{self.num_points}_{sizes}_s{self.seed}"
            return build_once(
                self.data_dir / name, lambda out: build_shapes(out, self.per_class, self.num_points, self.seed)
            )
        where = hashlib.sha1(str(Path(self.root).resolve()).encode()).hexdigest()[:8]
        name = f"{self.dataset_id}_v{FORMAT_VERSION}_n{self.num_points}_{self.sampling}_{self.variant}_{where}"
        return build_once(self.data_dir / name, self._build_real)

    def _build_real(self, out: Path) -> None:
        root, n = self.root, self.num_points
        if self.dataset_id in ("modelnet40", "modelnet10"):
            classes = int(self.dataset_id[-2:])
            names = None
            for split in ("train", "test"):
                points, label, names = datasets.read_modelnet(root, split, n, classes, self.sampling)
                np.savez(out / f"{split}.npz", points=points, label=label)
        elif self.dataset_id == "scanobjectnn":
            names = [str(i) for i in range(15)]
            for split in ("train", "test"):
                points, label = datasets.read_scanobjectnn(root, split, n, self.variant)
                np.savez(out / f"{split}.npz", points=points, label=label)
        else:
            for split in ("train", "val", "test"):
                points, label, parts, names = datasets.read_shapenetpart(root, split, n)
                np.savez(out / f"{split}.npz", points=points, label=label, parts=parts)
        (out / "classes.txt").write_text("\n".join(names) + "\n")

    def prepare_data(self) -> None:
        self._cache()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        folder = self._cache()
        self.class_names = (folder / "classes.txt").read_text().split()
        splits = {s: load_npz(p, self.card) for s in ("train", "val", "test") if (p := folder / f"{s}.npz").is_file()}
        if "val" not in splits:  # ModelNet and ScanObjectNN have no validation split: hold out part of train
            rng = np.random.default_rng(self.seed)
            order = rng.permutation(len(splits["train"]["label"]))
            cut = int(round(self.val_fraction * len(order)))
            splits["val"] = {k: v[order[:cut]] for k, v in splits["train"].items()}
            splits["train"] = {k: v[order[cut:]] for k, v in splits["train"].items()}
        if self.task == "cls":
            splits = {s: {k: v for k, v in a.items() if k != "parts"} for s, a in splits.items()}
        for arrays in splits.values():
            arrays["num_categories"] = np.array(len(self.class_names))
        self.splits = splits

    # ---- what the model and module need ----------------------------------------------------------------------
    def category_parts(self) -> list[list[int]]:
        if self.dataset_id == "shapenetpart":
            return [datasets.SHAPENETPART_PARTS[name] for name in self.class_names]
        return [shapes.PARTS[name] for name in self.class_names]

    def model_kwargs(self) -> dict:
        if self.splits is None:
            raise RuntimeError("RISurConvDataModule.setup() has not been called")
        kwargs = {"task": self.task, "num_points": self.num_points, "class_names": list(self.class_names)}
        if self.task == "cls":
            return kwargs | {"num_classes": len(self.class_names)}
        parts = self.category_parts()
        return kwargs | {
            "num_classes": sum(len(p) for p in parts),
            "num_categories": len(self.class_names),
            "category_parts": parts,
        }

    def dataset(self, split: str) -> Clouds:
        aug = self.augment and split == "train"
        return Clouds(self.splits[split], split, self.num_points, self.train_rotation, self.up, self.seed, aug)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.dataset(split),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            drop_last=shuffle and len(self.splits[split]["label"]) > self.batch_size,  # BatchNorm needs batches > 1
        )

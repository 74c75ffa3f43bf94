"""ImageClassificationDataModule: the data of every vision app (biformer, fmvit, bivit).

Datasets (`dataset=`, with the data card each one names in errors):
- `fashion_mnist` (default, embedded): Fashion-MNIST from the Debian package `dataset-fashion-mnist`
  (/usr/share/datasets/fashion-mnist, installed by `make setup`), unpacked once into
  `data_dir/fashion_mnist_v1/`. With `root=PATH` the same IDX reader takes a copy of it from PATH.
- `mnist`: any MNIST-format folder under `root` (the four `*-ubyte` IDX files, gzipped or not).
- `image_folder`: `root/train/<class>/*.png|jpg...` and `root/val/<class>/...` (or `root/test/`).
- `cifar10`, `cifar100`: the CIFAR "python version" folders under `root`.

Splits: validation = a seeded `val_fraction` of the official train split (no overlap with train);
test = the official test split. `limit_train` / `limit_eval` keep the first n images of each split
(smoke tests). Batches: `(images float32 [B, C, H, W] in [-1, 1], labels int64 [B])`.

Class names: `class_names` after `setup`, also in `model_kwargs()` so that they travel in the model
config (and so in an export's `model.yaml`/`export.json`) to predict.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from torch.utils.data import DataLoader, Subset

from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.data.samplers import EpochShuffle
from common.errors import ConfigError, DatasetError, check_choice, check_range
from common.vision import cifar, folder
from common.vision.datasets import ArrayDataset, FileDataset
from common.vision.idx import find_idx, read_idx
from common.vision.transforms import ArrayAugment, folder_transform, resize_uint8

FASHION_MNIST_PACKAGE = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IDX_FILES = {  # split -> (image stems, label stems); MNIST mirrors also use "train-images.idx3-ubyte"
    split: tuple((f"{prefix}-{kind}-ubyte", f"{prefix}-{kind.replace('-', '.')}-ubyte") for kind in kinds)
    for split, prefix, kinds in (
        ("train", "train", ("images-idx3", "labels-idx1")),
        ("test", "t10k", ("images-idx3", "labels-idx1")),
    )
}
FORMAT_VERSION = 1


def _pick(root: Path, stems: tuple[str, ...]) -> Path:
    found = [find_idx(root, s) for s in stems]
    return next((p for p in found if p.is_file()), found[0])


def read_idx_split(root: Path, split: str, card: str) -> tuple[np.ndarray, np.ndarray]:
    """Images [N, H, W, 1] uint8 and labels [N] int64 of an MNIST-format folder's split (train|test)."""
    image_file, label_file = (_pick(Path(root), stems) for stems in IDX_FILES[split])
    images, labels = read_idx(image_file, card, ndim=3), read_idx(label_file, card, ndim=1)
    if len(images) != len(labels):
        raise DatasetError(
            label_file, f"as many labels as images in {image_file.name}", card,
            problem=f"{len(labels)} labels for {len(images)} images",
        )  # fmt: skip
    if images.dtype != np.uint8:
        raise DatasetError(image_file, "unsigned-byte (type 0x08) images", card, problem=f"IDX type {images.dtype}")
    return images[..., None], labels.astype(np.int64)


def unpack_fashion_mnist(source: Path, target: Path) -> None:
    """Decode the package's IDX files into `target/{train,test}.npz` (numpy, no pickles)."""
    for split in ("train", "test"):
        images, labels = read_idx_split(source, split, "fashion_mnist")
        np.savez(target / f"{split}.npz", images=images, labels=labels)


class ImageClassificationDataModule(DataCardMixin, SplitDataLoaders, L.LightningDataModule):
    DATASETS = {
        "fashion_mnist": "fashion_mnist",
        "mnist": "mnist_format",
        "image_folder": "image_folder",
        "cifar10": "cifar",
        "cifar100": "cifar",
    }

    def __init__(
        self,
        dataset: str = "fashion_mnist",
        root: str | None = None,
        data_dir: str = "data/vision",
        img_size: int | None = 28,
        batch_size: int = 128,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        seed: int = 42,
        in_chans: int | None = None,
        crop_pad: int = 0,
        hflip: float = 0.0,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        scale: tuple[float, float] = (0.08, 1.0),
        crop_pct: float = 0.875,
        limit_train: int | None = None,
        limit_eval: int | None = None,
        package_dir: str = str(FASHION_MNIST_PACKAGE),
    ):
        """Args beyond the module docstring:
        img_size: side the images are resized to (null: the dataset's own; needed for image_folder).
        in_chans: 1 or 3 for image_folder (default 3); the array datasets have their own.
        crop_pad, hflip: cheap training augmentation (pad-and-random-crop, horizontal flip probability).
        auto_augment, re_prob: timm RandAugment string and random-erasing probability (slower; off by default).
        scale, crop_pct: timm's random-resized-crop scale and eval crop fraction (image_folder only).
        """
        super().__init__()
        check_choice("dataset", dataset, self.DATASETS)
        if dataset in ("mnist", "image_folder", "cifar10", "cifar100") and not root:
            raise ConfigError(
                "root", root, f"a folder holding the {dataset} dataset (see data_cards/{self.DATASETS[dataset]}.md)"
            )
        if img_size is not None:
            check_range("img_size", img_size, 8)
        elif dataset == "image_folder":
            raise ConfigError("img_size", img_size, "an image side (e.g. 224) for image_folder")
        check_range("batch_size", batch_size, 1)
        check_range("num_workers", num_workers, 0)
        check_range("val_fraction", val_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        if in_chans not in (None, 1, 3):
            raise ConfigError("in_chans", in_chans, "1, 3 or null")
        check_range("crop_pad", crop_pad, 0)
        check_range("hflip", hflip, 0.0, 1.0)
        check_range("re_prob", re_prob, 0.0, 1.0)
        for key, value in (("limit_train", limit_train), ("limit_eval", limit_eval)):
            if value is not None:
                check_range(key, value, 1)
        self.dataset, self.root, self.data_dir = dataset, root, Path(data_dir)
        self.img_size, self.batch_size, self.num_workers = img_size, int(batch_size), int(num_workers)
        self.val_fraction, self.seed, self.in_chans = float(val_fraction), int(seed), in_chans
        self.aug = {"crop_pad": crop_pad, "hflip": hflip, "auto_augment": auto_augment, "re_prob": re_prob}
        self.scale, self.crop_pct = tuple(scale), float(crop_pct)
        self.limit_train, self.limit_eval = limit_train, limit_eval
        self.package_dir = Path(package_dir)
        self.class_names: list[str] | None = None
        self.splits: dict = {}

    @property
    def dataset_name(self) -> str:
        return self.dataset

    # ---- loading ----------------------------------------------------------------------------------
    def _embedded_dir(self) -> Path:
        return self.data_dir / f"fashion_mnist_v{FORMAT_VERSION}"

    def prepare_data(self) -> None:
        if self.dataset == "fashion_mnist" and not self.root:
            if not (self._embedded_dir() / ".complete").is_file():
                for stems in IDX_FILES["train"] + IDX_FILES["test"]:
                    if not _pick(self.package_dir, stems).is_file():
                        raise DatasetError(
                            _pick(self.package_dir, stems),
                            "Fashion-MNIST IDX files from the Debian package dataset-fashion-mnist "
                            "(sudo apt-get install dataset-fashion-mnist, or make setup), or data.root=PATH",
                            "fashion_mnist",
                        )
            build_once(self._embedded_dir(), lambda tmp: unpack_fashion_mnist(self.package_dir, tmp))

    def _arrays(self) -> dict:
        """{"train": (images, labels), "test": (images, labels), "classes": names} for the array datasets."""
        if self.dataset == "fashion_mnist" and not self.root:
            out = {}
            for split in ("train", "test"):
                with np.load(self._embedded_dir() / f"{split}.npz", allow_pickle=False) as f:
                    out[split] = (f["images"], f["labels"])
            return out | {"classes": FASHION_MNIST_CLASSES}
        if self.dataset in ("fashion_mnist", "mnist"):
            out = {split: read_idx_split(Path(self.root), split, self.card) for split in ("train", "test")}
            n = int(max(out["train"][1].max(), out["test"][1].max())) + 1
            names = FASHION_MNIST_CLASSES if self.dataset == "fashion_mnist" else [str(i) for i in range(n)]
            if n > len(names):
                raise DatasetError(self.root, f"labels 0..{len(names) - 1}", self.card, problem=f"label {n - 1}")
            return out | {"classes": names}
        splits = {s: cifar.read_cifar(self.root, self.dataset, s) for s in ("train", "test")}
        return {s: splits[s][:2] for s in splits} | {"classes": splits["train"][2]}

    def _val_split(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Seeded (train indices, val indices) of the official train split; disjoint, sorted."""
        perm = np.random.default_rng(self.seed).permutation(n)
        n_val = max(1, int(round(self.val_fraction * n)))
        return np.sort(perm[n_val:]), np.sort(perm[:n_val])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        if self.dataset == "image_folder":
            self._setup_folder()
        else:
            data = self._arrays()
            size = self.img_size or data["train"][0].shape[1]
            (x_train, y_train), (x_test, y_test) = data["train"], data["test"]
            train_idx, val_idx = self._val_split(len(y_train))
            x_train, x_test = resize_uint8(x_train, size), resize_uint8(x_test, size)
            augment = ArrayAugment(**self.aug)
            self.splits = {
                "train": ArrayDataset(x_train[train_idx], y_train[train_idx], augment),
                "val": ArrayDataset(x_train[val_idx], y_train[val_idx]),
                "test": ArrayDataset(x_test, y_test),
            }
            self.class_names, self._in_chans, self._size = list(data["classes"]), x_train.shape[-1], size
        self.splits = {k: self._limit(k, ds) for k, ds in self.splits.items()}

    def _setup_folder(self) -> None:
        tree = folder.read_folder(self.root)
        in_chans = self.in_chans or 3
        files, labels = tree["train"]
        train_idx, val_idx = self._val_split(len(files))
        opts = self.aug | {"scale": self.scale, "crop_pct": self.crop_pct}
        train_tf = folder_transform(self.img_size, in_chans, True, **opts)
        eval_tf = folder_transform(self.img_size, in_chans, False, **opts)
        self.splits = {
            "train": FileDataset([files[i] for i in train_idx], [labels[i] for i in train_idx], train_tf, self.card),
            "val": FileDataset([files[i] for i in val_idx], [labels[i] for i in val_idx], eval_tf, self.card),
            "test": FileDataset(*tree["test"], eval_tf, self.card),
        }
        self.class_names, self._in_chans, self._size = tree["classes"], in_chans, self.img_size

    def _limit(self, split: str, ds):
        limit = self.limit_train if split == "train" else self.limit_eval
        return Subset(ds, range(min(limit, len(ds)))) if limit else ds

    def model_kwargs(self) -> dict:
        """What the data decides for the model: num_classes, in_chans, img_size, and the class names."""
        if self.class_names is None:
            self.setup("fit")
        return {
            "num_classes": len(self.class_names),
            "in_chans": int(self._in_chans),
            "img_size": int(self._size),
            "class_names": list(self.class_names),
        }

    # ---- loaders ----------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffle(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

"""TransDAE's data: 2-D slices for training, whole volumes (predicted slice by slice) for validation and test.

- `embedded` (default, `mni152_tissue`): the MNI152 2009 template's T1 with tissue labels (background, CSF, grey
  matter, white matter), from `common.medical.brains`; the labelled region cropped to a square and resampled to
  img_size x img_size in-plane (1 mm between axial slices). Held-out slabs along the axial axis are the validation
  and test volumes; `gap` slices around each belong to no split, so no training slice touches a held-out one.
- `synapse` / `msd`: the real layouts (readers in `common.medical.seg_readers`), from `data.root`.

Train items: {"image": [1, S, S] float32, "label": [1, S, S] int64}. Volume items (batch size 1):
{"image": [Z, H, W] float32, "label": [Z, H, W] int64, "spacing": [3] mm of (row, column, slice)} at the
volume's own in-plane size; the module resizes slices to the model's size and its predictions back.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.errors import DatasetError, check_choice, check_range
from common.medical.brains import TISSUES, load_brain
from common.medical.seg_transforms import train_transforms
from common.medical.slices import resample_slices, slab_split, slabs

EMBEDDED_FILE = "mni152_tissue_{size}.npz"
EMBEDDED_DIR = "mni152_tissue_{size}_v2"  # v2: most-probable-tissue labels, anti-aliased resampling


class SliceDataset(Dataset):
    """2-D slices [N, H, W] with labels, augmented by `transform` (MONAI dictionary transforms) when given."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform=None):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        item = {
            "image": torch.from_numpy(self.images[i][None]).float(),
            "label": torch.from_numpy(self.labels[i][None]),
        }
        if self.transform is not None:
            item = self.transform(item)
        # plain tensors: MONAI's MetaTensor would run every op of the model through its __torch_function__ (host
        # time in eager mode, a graph break per op under compile=true)
        image, label = (torch.as_tensor(item[key]).as_subclass(torch.Tensor) for key in ("image", "label"))
        return {"image": image.float(), "label": label.long()}


class VolumeDataset(Dataset):
    """Whole volumes for slice-wise evaluation: a list of (image [Z, H, W], label [Z, H, W], spacing), or of
    callables returning them (read lazily, one volume at a time)."""

    def __init__(self, volumes: list):
        self.volumes = volumes

    def __len__(self) -> int:
        return len(self.volumes)

    def __getitem__(self, i: int) -> dict:
        volume = self.volumes[i]
        image, label, spacing = volume() if callable(volume) else volume
        return {
            "image": torch.as_tensor(np.asarray(image, np.float32)),
            "label": torch.as_tensor(np.asarray(label, np.int64)),
            "spacing": torch.tensor(spacing, dtype=torch.float64),
        }


def build_embedded(folder: Path, size: int) -> None:
    """The MNI152 tissue slices at size x size, every axial slice that holds a labelled voxel."""
    brain = load_brain("mni152")
    zs = np.flatnonzero((brain.labels > 0).any(axis=(0, 1)))
    z = slice(int(zs[0]), int(zs[-1]) + 1)
    voxel = tuple(float(v) for v in np.linalg.norm(brain.affine[:3, :3], axis=0))
    stack = resample_slices(brain.image[..., z], brain.labels[..., z], voxel, size)
    np.savez_compressed(
        folder / EMBEDDED_FILE.format(size=size),
        image=stack.image,
        labels=stack.labels,
        spacing=np.array(stack.spacing),
    )


class TransDAEDataModule(DataCardMixin, L.LightningDataModule):
    DATASETS = {"mni152_tissue": "embedded_brains", "synapse": "synapse", "msd": "msd_nifti"}
    SOURCES = {"embedded": ("mni152_tissue",), "real": ("synapse", "msd")}

    def __init__(
        self,
        source: str = "embedded",
        dataset: str = "mni152_tissue",
        root: str | None = None,
        data_dir: str = "data/transdae",
        img_size: int = 64,
        batch_size: int = 16,
        val_slabs: tuple = ((0.45, 0.52),),
        test_slabs: tuple = ((0.25, 0.37), (0.60, 0.72)),
        gap: int = 3,
        augment: bool = True,
        intensity_augment: bool = True,
        num_workers: int = 0,
        val_cases: int = 2,
    ):
        super().__init__()
        check_choice("source", source, self.SOURCES)
        check_choice("dataset", dataset, self.SOURCES[source])
        check_range("img_size", img_size, 16)
        check_range("batch_size", batch_size, 1)
        check_range("gap", gap, 0)
        self.source, self.dataset_name, self.root = source, dataset, root
        self.data_dir, self.img_size, self.batch_size = Path(data_dir), int(img_size), int(batch_size)
        self.val_slabs = [tuple(s) for s in val_slabs]
        self.test_slabs = [tuple(s) for s in test_slabs]
        self.gap, self.augment, self.num_workers, self.val_cases = int(gap), augment, int(num_workers), int(val_cases)
        self.intensity_augment = intensity_augment
        self.class_names: list[str] = list(TISSUES)
        self._splits: dict = {}

    # ---- data ---------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        if self.source == "embedded":
            folder = self.data_dir / EMBEDDED_DIR.format(size=self.img_size)
            build_once(folder, lambda d: build_embedded(d, self.img_size))

    def setup(self, stage: str | None = None) -> None:
        if self._splits:
            return
        self._splits = self._embedded() if self.source == "embedded" else self._real()

    def _embedded(self) -> dict:
        path = self.data_dir / EMBEDDED_DIR.format(size=self.img_size) / EMBEDDED_FILE.format(size=self.img_size)
        if not path.is_file():
            raise DatasetError(path, "the embedded MNI152 slices (prepare_data builds them)", self.card)
        with np.load(path) as f:
            image, labels, spacing = f["image"], f["labels"], tuple(f["spacing"].tolist())
        try:
            split = slab_split(len(image), {"val": self.val_slabs, "test": self.test_slabs}, self.gap)
        except ValueError as exc:
            raise DatasetError(path, "held-out slabs inside [0, 1] that do not overlap", self.card, str(exc)) from None
        train = split["train"]
        # stored at the model's size already
        transform = train_transforms(None, intensity=self.intensity_augment) if self.augment else None
        return {
            "train": SliceDataset(image[train], labels[train], transform),
            **{s: VolumeDataset([(image[i], labels[i], spacing) for i in slabs(split[s])]) for s in ("val", "test")},
        }

    def _real(self) -> dict:
        from common.medical.seg_readers import read_msd, read_synapse

        reader = read_synapse if self.dataset_name == "synapse" else read_msd
        data = reader(self.root, self.card, val_cases=self.val_cases)
        self.class_names = data.class_names
        transform = train_transforms(self.img_size, self.augment, flip=data.flip, intensity=self.intensity_augment)
        return {"train": data.train(transform), "val": VolumeDataset(data.val), "test": VolumeDataset(data.test)}

    def model_kwargs(self) -> dict:
        return {
            "in_chans": 1,
            "num_classes": len(self.class_names),
            "img_size": self.img_size,
            "class_names": self.class_names,
        }

    # ---- loaders ------------------------------------------------------------------------------------------
    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self._splits["train"],
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(self._splits["train"]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _volumes(self, split: str) -> DataLoader:
        return DataLoader(self._splits[split], batch_size=1, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._volumes("val")

    def test_dataloader(self) -> DataLoader:
        return self._volumes("test")

    def volumes(self, split: str) -> VolumeDataset:
        return self._splits[split]

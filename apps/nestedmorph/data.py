"""NestedMorph's data: synthetic pairs from the embedded brains, the real inter-subject pair, or real NIfTI pairs.

`source=embedded` (default, `data_cards/embedded_brains.md`): the brains are resampled once onto `size`^3 cubes
(MNI152 and Colin27 on one MNI-space grid, the macaque on its own) with tissue labels derived by the same rule
for all (`common.medical.reg_tissue`). A synthetic pair warps one brain twice, with two independent random smooth
fields (moving and fixed), each followed by its own intensity change; labels are warped along.
- train: MNI152 and the macaque, fresh fields every epoch drawn from the run's RNG (restored on resume);
- val: the same two brains, `val_pairs` fixed pairs from their own seeds (model selection);
- test: Colin27, a brain never seen in training or validation, `test_pairs` pairs from other seeds, plus the
  real inter-subject pairs Colin27 -> MNI152 and MNI152 -> Colin27 (no synthetic field: the brains as they are).
`source=real` (`data_cards/nifti_registration_pairs.md`): `<root>/{train,val,test}/<pair>/{moving,fixed}.nii.gz`.

Items: `moving`, `fixed` [1, S, S, S] in [0, 1]; `moving_labels`, `fixed_labels` [1, S, S, S] int64 (all zero
when a real pair has none); `spacing` (mm per voxel); `real` (1 for a real pair, 0 for a synthetic one).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.data.loaders import SplitDataLoaders
from common.errors import DatasetError, check_choice, check_range
from common.medical.brains import load_brain
from common.medical.deform import draw_field, intensity_change
from common.medical.reg_pairs import pair_folders, read_pair
from common.medical.reg_tissue import tissue_labels
from common.medical.warp import TraceableWarp, cube_grid, resample, warp_labels

FORMAT_VERSION = 2  # 2: labels resampled class by class (common.medical.warp)
SPLIT_BRAINS = {"train": ("mni152", "macaque"), "val": ("mni152", "macaque"), "test": ("colin27",)}
REAL_PAIRS = (("colin27", "mni152"), ("mni152", "colin27"))  # (moving, fixed)
SPLIT_SEEDS = {"val": 1_000_003, "test": 2_000_003}  # val/test pairs come from their own seeds, never the run's
EMBEDDED_CARD, REAL_CARD = "embedded_brains", "nifti_registration_pairs"


def build_cubes(out: Path, size: int) -> None:
    """Each embedded brain on its `size`^3 cube: image, derived tissue labels, grid affine (npz)."""
    brains = {name: load_brain(name) for name in ("mni152", "colin27", "macaque")}
    mni_grid = cube_grid(brains["mni152"].image, brains["mni152"].affine, size)
    for name, brain in brains.items():
        grid = cube_grid(brain.image, brain.affine, size) if name == "macaque" else mni_grid  # MNI space shared
        labels = tissue_labels(brain.image)
        np.savez_compressed(
            out / f"{name}.npz",
            image=resample(brain.image, brain.affine, grid, size),
            labels=resample(labels, brain.affine, grid, size, labels=True),
            affine=grid,
        )


def load_cube(folder: Path, name: str) -> dict:
    path = folder / f"{name}.npz"
    try:
        with np.load(path, allow_pickle=False) as f:
            image, labels, affine = f["image"], f["labels"], f["affine"]
    except Exception as exc:  # noqa: BLE001
        raise DatasetError(
            path, "image, labels, affine arrays (delete the folder to rebuild)", EMBEDDED_CARD, str(exc)
        ) from None
    return {
        "image": torch.from_numpy(image)[None],
        "labels": torch.from_numpy(labels)[None],
        "spacing": float(affine[0, 0]),
    }


class SyntheticPairs(Dataset):
    """`n` pairs cycling over `brains`; pair i uses the generator seeded `seed + i`, or the global RNG if None."""

    def __init__(self, brains: list[dict], n: int, max_shift: float, seed: int | None):
        self.brains, self.n, self.max_shift, self.seed = brains, n, max_shift, seed
        self.warp_image = TraceableWarp("bilinear", "zeros")

    def __len__(self) -> int:
        return self.n

    def _view(self, brain: dict, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        size = brain["image"].shape[-1]
        ddf = draw_field(size, self.max_shift * size, generator=generator)[None]
        image = self.warp_image(brain["image"][None], ddf)[0]
        labels = warp_labels(brain["labels"][None], ddf)[0]
        seed = int(torch.randint(2**31 - 1, (), generator=generator))
        return intensity_change(seed)(image).clamp(0, 1).as_tensor().float(), labels

    def __getitem__(self, i: int) -> dict:
        generator = None if self.seed is None else torch.Generator().manual_seed(self.seed + i)
        brain = self.brains[i % len(self.brains)]
        with torch.no_grad():
            (moving, moving_labels), (fixed, fixed_labels) = self._view(brain, generator), self._view(brain, generator)
        return {
            "moving": moving,
            "fixed": fixed,
            "moving_labels": moving_labels,
            "fixed_labels": fixed_labels,
            "spacing": brain["spacing"],
            "real": 0,
        }


def real_item(moving: dict, fixed: dict, spacing: float) -> dict:
    return {
        "moving": moving["image"],
        "fixed": fixed["image"],
        "moving_labels": moving["labels"],
        "fixed_labels": fixed["labels"],
        "spacing": spacing,
        "real": 1,
    }


class PairFolders(Dataset):
    """Real NIfTI pairs of one split, read and resized on access."""

    def __init__(self, folders: list[Path], size: int):
        self.folders, self.size = folders, size

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, i: int) -> dict:
        pair = read_pair(self.folders[i], self.size, card=REAL_CARD)
        zeros = torch.zeros(1, self.size, self.size, self.size, dtype=torch.long)
        source_spacing = np.abs(pair["affine"][:3, :3]).sum(axis=0)
        spacing = float(np.mean(source_spacing * (np.array(pair["shape"]) - 1) / (self.size - 1)))  # after resizing
        moving_labels, fixed_labels = pair.get("moving_labels", zeros), pair.get("fixed_labels", zeros)
        return {
            "moving": pair["moving"],
            "fixed": pair["fixed"],
            "moving_labels": moving_labels,
            "fixed_labels": fixed_labels,
            "spacing": spacing,
            "real": 1,
        }


class NestedMorphDataModule(SplitDataLoaders, DataCardMixin, L.LightningDataModule):
    """Registration pairs of `size`^3 volumes (see the module docstring).

    Args:
        source: "embedded" (the brains) or "real" (NIfTI pairs under `root`).
        size: cube side S (the paper: 64).
        train_pairs / val_pairs / test_pairs: synthetic pairs per epoch / in val / in test (embedded only).
        max_shift: the largest displacement of a synthetic field, as a fraction of the cube side.
    """

    DATASETS = {"embedded_brains": EMBEDDED_CARD, "nifti_registration_pairs": REAL_CARD}

    def __init__(
        self,
        source: str = "embedded",
        root: str | None = None,
        data_dir: str = "data/nestedmorph",
        size: int = 64,
        train_pairs: int = 64,
        val_pairs: int = 8,
        test_pairs: int = 16,
        max_shift: float = 0.06,
        batch_size: int = 2,
        num_workers: int = 0,
        seed: int = 42,
    ):
        super().__init__()
        check_choice("source", source, ("embedded", "real"))
        check_range("size", size, 32)
        for key, value in (("train_pairs", train_pairs), ("val_pairs", val_pairs), ("test_pairs", test_pairs)):
            check_range(key, value, 1)
        check_range("max_shift", max_shift, 0.0, 0.25)
        check_range("batch_size", batch_size, 1)
        if source == "real" and not root:
            raise DatasetError(str(root), "data.root=<folder of NIfTI pairs>", REAL_CARD, "data.root is not set")
        self.source, self.root, self.size = source, root, int(size)
        self.data_dir = Path(data_dir) / f"cubes{self.size}_v{FORMAT_VERSION}"
        self.counts = {"train": train_pairs, "val": val_pairs, "test": test_pairs}
        self.max_shift, self.batch_size, self.num_workers, self.seed = max_shift, batch_size, num_workers, seed
        self.datasets: dict[str, Dataset] = {}

    @property
    def dataset_name(self) -> str:
        return "embedded_brains" if self.source == "embedded" else "nifti_registration_pairs"

    def prepare_data(self) -> None:
        if self.source == "embedded":
            build_once(self.data_dir, lambda out: build_cubes(out, self.size))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.source == "real":
            for split in ("train", "val", "test"):
                self.datasets[split] = PairFolders(pair_folders(self.root, split, REAL_CARD), self.size)
            return
        cubes = {name: load_cube(self.data_dir, name) for name in ("mni152", "colin27", "macaque")}
        for split, names in SPLIT_BRAINS.items():
            seed = None if split == "train" else self.seed + SPLIT_SEEDS[split]
            self.datasets[split] = SyntheticPairs([cubes[n] for n in names], self.counts[split], self.max_shift, seed)
        real = [real_item(cubes[m], cubes[f], cubes["mni152"]["spacing"]) for m, f in REAL_PAIRS]
        self.datasets["test"] = torch.utils.data.ConcatDataset([self.datasets["test"], real])

    def model_kwargs(self) -> dict:
        return {"size": self.size}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        batch_size = self.batch_size if split == "train" else 1  # evaluation per pair
        return DataLoader(self.datasets[split], batch_size, shuffle=shuffle, num_workers=self.num_workers)

"""The split dataloaders of a data module, from its one `_loader(split, shuffle)`."""

from __future__ import annotations

from torch.utils.data import DataLoader


class SplitDataLoaders:
    """train/val/test dataloaders for a LightningDataModule (list it before `L.LightningDataModule`, whose
    hooks raise): the module defines `_loader(split, shuffle) -> DataLoader`; only training shuffles."""

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        raise NotImplementedError

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

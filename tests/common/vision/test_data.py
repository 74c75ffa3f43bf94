"""ImageClassificationDataModule: splits (sizes, no train/val overlap, seeded), the MNIST-format, CIFAR and
image-folder readers on tiny synthetic files, the embedded Fashion-MNIST, and clear errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from common.errors import ConfigError, DatasetError
from common.vision.data import FASHION_MNIST_PACKAGE, ImageClassificationDataModule
from tests.common.vision.fakes import image_id, write_cifar10, write_image_folder, write_mnist


def _ids(ds) -> set[int]:
    images = ds.dataset.images[list(ds.indices)] if hasattr(ds, "indices") else ds.images
    return {image_id(x.numpy()) for x in images}


def test_mnist_folder_splits(tmp_path):
    root = write_mnist(tmp_path / "mnist", n_train=60, n_test=20, gz=False)
    dm = ImageClassificationDataModule(dataset="mnist", root=str(root), val_fraction=0.2, seed=3, batch_size=8)
    dm.setup("fit")
    train, val, test = (dm.splits[s] for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (48, 12, 20)
    assert not _ids(train) & _ids(val) and len(_ids(train) | _ids(val)) == 60
    assert _ids(test) == set(range(10_000, 10_020))
    assert dm.model_kwargs() == {
        "num_classes": 10,
        "in_chans": 1,
        "img_size": 28,
        "class_names": [str(i) for i in range(10)],
    }
    images, labels = next(iter(dm.train_dataloader()))
    assert images.shape == (8, 1, 28, 28) and images.dtype == torch.float32 and labels.dtype == torch.long
    assert images.min() >= -1 and images.max() <= 1
    other = ImageClassificationDataModule(dataset="mnist", root=str(root), val_fraction=0.2, seed=3)
    other.setup("fit")
    assert _ids(other.splits["val"]) == _ids(val)  # seeded
    third = ImageClassificationDataModule(dataset="mnist", root=str(root), val_fraction=0.2, seed=4)
    third.setup("fit")
    assert _ids(third.splits["val"]) != _ids(val)


def test_resize_limits_and_augmentation(tmp_path):
    root = write_mnist(tmp_path / "m")
    dm = ImageClassificationDataModule(
        dataset="mnist", root=str(root), img_size=16, limit_train=5, limit_eval=3, crop_pad=2, hflip=0.5
    )
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [5, 3, 3]
    x, _ = dm.splits["train"][0]
    assert x.shape == (1, 16, 16) and dm.model_kwargs()["img_size"] == 16


def test_mismatched_labels_name_the_file(tmp_path):
    root = write_mnist(tmp_path / "m", gz=False)
    from tests.common.vision.fakes import idx_bytes

    (root / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(7, np.uint8)))
    dm = ImageClassificationDataModule(dataset="mnist", root=str(root))
    with pytest.raises(DatasetError, match="7 labels for 20 images") as info:
        dm.setup("fit")
    assert "t10k-labels-idx1-ubyte" in str(info.value) and "mnist_format.md" in str(info.value)


def test_cifar10_reader(tmp_path):
    root = write_cifar10(tmp_path)
    dm = ImageClassificationDataModule(dataset="cifar10", root=str(root), img_size=32, val_fraction=0.2)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [40, 10, 10]
    assert dm.class_names[0] == "airplane" and dm.model_kwargs()["in_chans"] == 3
    x, _ = dm.splits["test"][3]
    raw = ((x * 0.5 + 0.5) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    assert image_id(raw) == 9003  # channel-planar rows decoded back to [H, W, C]


def test_cifar_refuses_a_pickle_that_runs_code(tmp_path):
    root = write_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (root / "cifar-10-batches-py" / "test_batch").write_bytes(pickle.dumps({b"data": Evil()}))
    dm = ImageClassificationDataModule(dataset="cifar10", root=str(root))
    with pytest.raises(DatasetError, match="refused global builtins.print") as info:
        dm.setup("fit")
    assert "data_cards/cifar.md" in str(info.value)


def test_image_folder_reader(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    dm = ImageClassificationDataModule(dataset="image_folder", root=str(root), img_size=16, val_fraction=1 / 6)
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [15, 3, 6]
    assert dm.model_kwargs() == {"num_classes": 3, "in_chans": 3, "img_size": 16, "class_names": ["cat", "dog", "fox"]}
    train_files = set(dm.splits["train"].files)
    assert not train_files & set(dm.splits["val"].files)
    x, y = dm.splits["train"][0]
    assert x.shape == (3, 16, 16) and 0 <= int(y) < 3


def test_image_folder_errors(tmp_path):
    root = write_image_folder(tmp_path / "imgs")
    (root / "val" / "wolf").mkdir()
    with pytest.raises(DatasetError, match="absent from the train split"):
        ImageClassificationDataModule(dataset="image_folder", root=str(root), img_size=16).setup("fit")
    with pytest.raises(DatasetError, match="image_folder.md"):
        ImageClassificationDataModule(dataset="image_folder", root=str(tmp_path / "none"), img_size=16).setup("fit")


def test_bad_config_values():
    with pytest.raises(ConfigError, match="dataset"):
        ImageClassificationDataModule(dataset="imagenet22k")
    with pytest.raises(ConfigError, match="root"):
        ImageClassificationDataModule(dataset="cifar10")
    with pytest.raises(ConfigError, match="val_fraction"):
        ImageClassificationDataModule(val_fraction=1.0)


def test_missing_package_names_the_card(tmp_path):
    dm = ImageClassificationDataModule(data_dir=str(tmp_path / "data"), package_dir=str(tmp_path / "nopkg"))
    with pytest.raises(DatasetError, match="dataset-fashion-mnist") as info:
        dm.prepare_data()
    assert "data_cards/fashion_mnist.md" in str(info.value)


@pytest.mark.skipif(not Path(FASHION_MNIST_PACKAGE).is_dir(), reason="dataset-fashion-mnist not installed")
def test_embedded_fashion_mnist(tmp_path):
    dm = ImageClassificationDataModule(data_dir=str(tmp_path / "data"))
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.splits[s]) for s in ("train", "val", "test")] == [54_000, 6_000, 10_000]
    assert dm.model_kwargs()["num_classes"] == 10 and dm.class_names[9] == "Ankle boot"
    assert dm.dataset_name == "fashion_mnist" and dm.card == "fashion_mnist"
    labels = dm.splits["test"].labels
    assert torch.bincount(labels).tolist() == [1000] * 10

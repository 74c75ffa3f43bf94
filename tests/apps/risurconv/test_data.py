"""The data module: embedded splits, the rotation protocols (training about the up axis keeps heights; fixed
evaluation rotations are reproducible), part labels and what it tells the model; bad values name the key."""

from __future__ import annotations

import pytest
import torch

from apps.risurconv.data import RISurConvDataModule
from common.errors import ConfigError, DatasetError
from common.pointcloud.shapes import CLASSES, NUM_PARTS, PARTS

SIZES = {"train": 2, "val": 1, "test": 1}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("risurconv_data")


def module(data_dir, **kwargs):
    dm = RISurConvDataModule(data_dir=str(data_dir), num_points=64, per_class=SIZES, batch_size=4, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_splits_and_model_kwargs(data_dir):
    dm = module(data_dir)
    assert {s: len(dm.dataset(s)) for s in SIZES} == {s: n * len(CLASSES) for s, n in SIZES.items()}
    assert dm.model_kwargs() == {"task": "cls", "num_points": 64, "class_names": CLASSES, "num_classes": len(CLASSES)}
    batch = next(iter(dm.test_dataloader()))
    assert batch["points_z"].shape == (4, 64, 6) and batch["points_so3"].shape == (4, 64, 6)
    assert dm.card == "procedural_shapes"


def test_up_axis_rotation_keeps_heights_and_so3_does_not(data_dir):
    canonical = torch.from_numpy(module(data_dir).splits["train"]["points"][:, :64])
    for rotation, keeps in (("z", True), ("so3", False)):
        ds = module(data_dir, train_rotation=rotation, augment=False).dataset("train")
        turned = torch.stack([ds[i]["points"] for i in range(len(ds))])
        same = torch.allclose(turned[..., 2], canonical[..., 2], atol=1e-5)
        assert same == keeps, rotation
        assert torch.allclose(turned[..., :3].norm(dim=-1), canonical[..., :3].norm(dim=-1), atol=1e-5)


def test_fixed_evaluation_rotations_are_reproducible_and_differ_between_samples(data_dir):
    ds = module(data_dir, train_rotation="so3").dataset("test")
    a, b = ds[0], ds[0]
    assert torch.equal(a["points_so3"], b["points_so3"]) and torch.equal(a["points_z"], b["points_z"])
    canonical = torch.from_numpy(ds.a["points"][:2, :64])
    # the rotation maps the canonical cloud onto the served one: solve R from the points (least squares)
    r = [torch.linalg.lstsq(canonical[i, :, :3].double(), ds[i]["points_so3"][:, :3].double()).solution for i in (0, 1)]
    assert not torch.allclose(r[0], r[1], atol=1e-3)


def test_partseg_serves_parts_and_categories(data_dir):
    dm = module(data_dir, task="partseg")
    kwargs = dm.model_kwargs()
    assert kwargs["num_classes"] == NUM_PARTS and kwargs["num_categories"] == len(CLASSES)
    assert kwargs["category_parts"] == [PARTS[c] for c in CLASSES]
    batch = next(iter(dm.val_dataloader()))
    for parts, label, onehot in zip(batch["parts"], batch["label"], batch["category"]):
        assert set(parts.tolist()) <= set(PARTS[CLASSES[label]]) and onehot.argmax() == label


def test_bad_values_and_missing_real_data(data_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        RISurConvDataModule(train_rotation="xyz")
    assert err.value.key == "train_rotation"
    with pytest.raises(ConfigError) as err:
        RISurConvDataModule(task="partseg", source="real", dataset="modelnet40", root="x")
    assert err.value.key == "task"
    with pytest.raises(ConfigError) as err:
        RISurConvDataModule(source="real", dataset="modelnet40")
    assert err.value.key == "root" and "data_cards/modelnet40.md" in err.value.expected
    dm = RISurConvDataModule(source="real", dataset="modelnet40", root=str(tmp_path / "none"), data_dir=str(tmp_path))
    with pytest.raises(DatasetError) as err:
        dm.prepare_data()
    assert str(tmp_path / "none") in str(err.value) and "modelnet40.md" in str(err.value)
    assert not any(tmp_path.glob("modelnet40_v*"))  # nothing half-built is left behind as if complete

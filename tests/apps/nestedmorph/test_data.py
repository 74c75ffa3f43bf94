"""The embedded registration data: what each split holds, seeded evaluation pairs, fresh training fields, labels
that travel with their images, and a real pair left as it is."""

from __future__ import annotations

import pytest
import torch

from apps.nestedmorph.data import SPLIT_BRAINS, NestedMorphDataModule
from common.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def dm(cubes_dir):
    dm = NestedMorphDataModule(data_dir=str(cubes_dir), size=32, train_pairs=4, val_pairs=2, test_pairs=2)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def _dice(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_the_test_brain_is_never_trained_or_validated_on():
    assert "colin27" not in SPLIT_BRAINS["train"] + SPLIT_BRAINS["val"] and SPLIT_BRAINS["test"] == ("colin27",)


def test_pairs_are_seeded_for_evaluation_and_fresh_for_training(dm):
    val, train = dm.datasets["val"], dm.datasets["train"]
    torch.testing.assert_close(val[0]["moving"], val[0]["moving"])
    assert not torch.equal(train[0]["moving"], train[0]["moving"])  # a new field every epoch
    assert not torch.equal(val[0]["moving"], val[0]["fixed"])  # two independent views of one brain
    item = dm.datasets["test"][0]
    assert item["real"] == 0 and item["moving"].shape == (1, 32, 32, 32) and item["moving"].max() <= 1


def test_labels_travel_with_their_image(dm):
    """The warped labels cover the warped brain: brain voxels (image > 0.05) vs labelled voxels, Dice > 0.9;
    against the other view of the pair they overlap less (the fields moved them apart)."""
    item = dm.datasets["val"][0]
    brain, labels = item["moving"] > 0.05, item["moving_labels"] > 0
    assert _dice(brain, labels) > 0.9
    assert _dice(brain, item["fixed_labels"] > 0) < _dice(brain, labels)


def test_real_pairs_are_colin27_and_mni152_as_they_are(dm):
    test = dm.datasets["test"]
    real = [test[i] for i in range(len(test)) if test[i]["real"]]
    assert len(real) == 2
    torch.testing.assert_close(real[0]["moving"], real[1]["fixed"])  # the two directions of one pair
    assert set(real[0]["fixed_labels"].unique().tolist()) == {0, 1, 2, 3}


def test_bad_configs_and_a_missing_real_root(tmp_path):
    with pytest.raises(ConfigError):
        NestedMorphDataModule(data_dir=str(tmp_path), max_shift=0.5)
    with pytest.raises(DatasetError, match="data.root is not set"):
        NestedMorphDataModule(source="real")

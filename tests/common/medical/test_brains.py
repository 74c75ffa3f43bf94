"""The embedded brains are real volumes with plausible label maps on their own voxels."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import DatasetError
from common.medical.brains import TISSUES, load_brain


def test_mni152_tissue_classes_follow_t1_contrast():
    brain = load_brain("mni152")
    assert brain.labels.shape == brain.image.shape == (197, 233, 189)
    assert brain.label_names == TISSUES
    counts = np.bincount(brain.labels.ravel(), minlength=4)
    # an adult brain is ~1.1-1.3 l of grey and ~0.5-0.7 l of white matter (1 mm voxels: ml)
    assert 900_000 < counts[2] < 1_400_000 and 400_000 < counts[3] < 800_000 and counts[1] > 50_000
    # T1 contrast: CSF darker than grey matter, grey darker than white
    means = [brain.image[brain.labels == k].mean() for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]


@pytest.mark.parametrize("name", ["colin27", "macaque"])
def test_atlas_labels_sit_on_the_brain(name):
    brain = load_brain(name)
    assert brain.labels.shape == brain.image.shape and brain.image.min() >= 0 and brain.image.max() == 1
    inside, outside = brain.image[brain.labels > 0].mean(), brain.image[brain.labels == 0].mean()
    assert inside > 3 * outside  # labelled voxels are brain tissue, the rest mostly empty space


def test_unknown_brain_names_the_card():
    with pytest.raises(DatasetError, match="embedded_brains"):
        load_brain("rat")

"""Per-volume Dice and HD95 against hand-computed values and scipy's distances; slices and slab splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from common.medical.seg_metrics import summarize, volume_scores
from common.medical.slices import resample_slices, slab_split, slabs


def test_dice_by_hand_and_hd95_against_scipy():
    label = torch.zeros(6, 20, 20, dtype=torch.long)
    label[1:5, 4:12, 4:12] = 1
    label[2:4, 14:18, 14:18] = 2
    pred = label.clone()
    pred[1:5, 4:12, 12:14] = 1  # class 1 grown by two columns
    scores = volume_scores(pred, label, 4, spacing=(1.0, 0.5, 3.0))
    inter, a, b = (label == 1).sum(), (label == 1).sum(), (pred == 1).sum()
    assert scores["dice"][0] == pytest.approx(float(2 * inter / (a + b)), rel=1e-6)
    assert scores["dice"][1] == 1.0 and np.isnan(scores["dice"][2])  # class 3 absent: no score
    # HD95 from surface distances in mm (axes [H, W, Z] = columns of [Z, H, W] moved), symmetric, 95th percentile
    p, y = (t.permute(1, 2, 0).numpy() == 1 for t in (pred, label))
    spacing = (1.0, 0.5, 3.0)

    def surface(m):
        return m & ~ndimage.binary_erosion(m)

    d_py = ndimage.distance_transform_edt(~surface(y), sampling=spacing)[surface(p)]
    d_yp = ndimage.distance_transform_edt(~surface(p), sampling=spacing)[surface(y)]
    expected = max(np.percentile(d_py, 95), np.percentile(d_yp, 95))
    assert scores["hd95"][0] == pytest.approx(expected, rel=1e-3)
    assert scores["hd95"][1] == 0.0


def test_missed_class_gets_worst_distance_and_summary_means():
    label = torch.zeros(4, 10, 10, dtype=torch.long)
    label[1:3, 2:5, 2:5] = 1
    missed = volume_scores(torch.zeros_like(label), label, 2, spacing=(1.0, 1.0, 2.0))
    assert missed["dice"][0] == 0.0
    assert missed["hd95"][0] == pytest.approx(np.sqrt(10**2 + 10**2 + 8**2))  # the volume's diagonal in mm
    perfect = volume_scores(label, label, 2, spacing=(1.0, 1.0, 2.0))
    summary = summarize([missed, perfect], ["background", "lesion"])
    assert summary["dice"] == summary["dice_lesion"] == pytest.approx(0.5)


def test_resampled_labels_are_each_pixels_largest_share():
    """Shrinking 3:1, each output pixel covers a 3 x 3 block: blocks of classes 1 and 2 in a checkerboard, each
    with its centre voxel of class 3. The output is the checkerboard (the classes holding 8 of 9 voxels), with no
    class 3, which nearest-neighbour sampling (it reads the centres) would return everywhere; the image is the
    blocks' averages (~8/9 of each block's value), not the centre voxel's value."""
    blocks = (np.indices((6, 6)).sum(0) % 2 + 1).astype(np.int64)  # 6 x 6 checkerboard of 1 and 2
    labels = np.repeat(np.repeat(blocks, 3, 0), 3, 1)[..., None].repeat(2, axis=2)  # 18 x 18 x 2
    labels[1::3, 1::3] = 3
    image = np.where(labels == 3, 0.0, 1.0).astype(np.float32)
    stack = resample_slices(image, labels, (1.0, 1.0, 1.0), size=6, margin=0)
    assert stack.labels.shape == (2, 6, 6)
    np.testing.assert_array_equal(stack.labels[0], blocks)
    inner = stack.image[0, 1:-1, 1:-1]  # away from the zero padding outside the window
    assert np.all((inner > 0.75) & (inner < 0.95)), inner  # the average 8/9 up to the Gaussian's weights


def test_resample_slices_and_slabs():
    image = np.zeros((30, 20, 5), np.float32)
    labels = np.zeros((30, 20, 5), np.int64)
    labels[5:25, 6:14] = 2
    image[labels > 0] = 1.0
    stack = resample_slices(image, labels, (1.0, 1.0, 2.0), size=16, margin=2)
    assert stack.image.shape == stack.labels.shape == (5, 16, 16)
    assert set(np.unique(stack.labels)) == {0, 2}  # the largest share invents no label
    assert stack.spacing == pytest.approx((24 / 16, 24 / 16, 2.0))  # a 24 mm square window (20 + 2 margins)
    split = slab_split(40, {"val": [(0.5, 0.6)], "test": [(0.2, 0.3), (0.8, 0.9)]}, gap=2)
    held = np.concatenate([split["val"], split["test"]])
    assert len(np.intersect1d(split["train"], held)) == 0
    assert np.abs(split["train"][:, None] - held[None, :]).min() > 2  # the gap: no training neighbour
    assert [list(s) for s in slabs(split["test"])] == [list(range(8, 12)), list(range(32, 36))]
    with pytest.raises(ValueError, match="overlaps"):
        slab_split(40, {"val": [(0.2, 0.4)], "test": [(0.3, 0.5)]}, gap=0)

"""Synthetic deformation fields and the cube resampling of common/medical/{deform,warp}.py."""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.blocks import Warp

from common.medical.deform import MIN_JACOBIAN, draw_field, intensity_change
from common.medical.jacobian import jacobian_determinant
from common.medical.warp import TraceableWarp, cube_grid, resample, resized_affine, warp_labels


def test_fields_are_seeded_bounded_and_never_fold():
    g = torch.Generator().manual_seed(0)
    a = draw_field(32, 2.0, generator=g)
    assert a.shape == (3, 32, 32, 32)
    torch.testing.assert_close(a, draw_field(32, 2.0, generator=torch.Generator().manual_seed(0)))
    # mild fields keep the requested largest displacement, up to the trilinear upsampling between the drawn points
    assert 0.9 * 2.0 < float(a.norm(dim=0).max()) <= 2.0 + 1e-5
    # a violent request is shrunk until the (full-resolution) map no longer folds
    wild = draw_field(32, 12.0, control=8, generator=g)
    det = jacobian_determinant(wild[None])
    assert float(wild.norm(dim=0).max()) < 12.0 and float(det.min()) > 0.5 * MIN_JACOBIAN


def test_intensity_change_is_seeded():
    image = torch.rand(1, 16, 16, 16)
    one, two = intensity_change(3)(image), intensity_change(3)(image)
    torch.testing.assert_close(torch.as_tensor(one), torch.as_tensor(two))
    assert not torch.allclose(torch.as_tensor(one), torch.as_tensor(intensity_change(4)(image)))


def test_cube_grid_and_resample_keep_world_positions():
    """A labelled block at known mm positions lands on the cube voxels whose centres lie inside it."""
    image = np.zeros((40, 50, 30), np.float32)
    image[5:35, 10:45, 3:27] = 0.5  # the "brain" box
    block = np.zeros(image.shape, np.int64)
    block[19:22, 29:32, 14:17] = 1  # 3 source voxels (6 mm) a side: wider than a cube voxel (4.25 mm)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40, -60, -30]
    grid = cube_grid(image, affine, 16, margin=0.0)
    assert np.isclose(grid[0, 0], 2.0 * 34 / 16)  # the box's longest side (35 voxels apart, 68 mm) spans 16 voxels
    hits = np.argwhere(resample(block, affine, grid, 16, labels=True) == 1)
    centres = (grid @ np.c_[hits, np.ones(len(hits))].T)[:3].T
    lo, hi = (affine @ [19, 29, 14, 1])[:3] - 1.0, (affine @ [21, 31, 16, 1])[:3] + 1.0  # voxel extents in mm
    assert len(hits) >= 1 and (centres >= lo - 1e-6).all() and (centres <= hi + 1e-6).all()
    assert resample(image, affine, grid, 16).shape == (16, 16, 16)


def test_resized_affine_keeps_the_corners():
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    new = resized_affine(affine, (11, 21, 31), 6)
    assert np.allclose(new @ [5, 5, 5, 1], affine @ [10, 20, 30, 1]) and np.allclose(new[:3, 3], affine[:3, 3])


def test_labels_downsample_class_by_class():
    """Class 2 fills 5/6 of every cube cell, class 1 one plane in six, right where nearest neighbour samples:
    nearest neighbour would return class 1 everywhere; class by class returns the majority, class 2."""
    labels = np.full((60, 12, 12), 2, np.int64)
    labels[::6] = 1
    grid = np.diag([6.0, 1.0, 1.0, 1.0])  # cube voxel k sits on source plane 6k
    out = resample(labels, np.eye(4), grid, 10, labels=True)
    assert (out[:, 2:8, 2:8] == 2).all()


def test_warp_labels_moves_labels_and_invents_none():
    labels = torch.zeros(1, 1, 8, 8, 8, dtype=torch.long)
    labels[:, :, 2:6, 2:6, 2:6] = 300
    labels[:, :, 3:5, 3:5, 3:5] = 7  # label values need not be 0..K
    torch.testing.assert_close(warp_labels(labels, torch.zeros(1, 3, 8, 8, 8)), labels)
    shift = torch.zeros(1, 3, 8, 8, 8)
    shift[:, 0] = 1.0  # reads the voxel one slice further along axis 0
    torch.testing.assert_close(warp_labels(labels, shift)[:, :, :-1], labels[:, :, 1:])
    half = warp_labels(labels, shift * 0.4)  # between voxels: each voxel takes the heavier of its two neighbours
    assert set(half.unique().tolist()) == {0, 7, 300}
    torch.testing.assert_close(half, labels)  # 0.4 of a voxel: the nearer neighbour, i.e. no move


def test_traceable_warp_matches_monai_and_compiles_without_graph_breaks():
    g = torch.Generator().manual_seed(0)
    image, ddf = torch.rand(2, 1, 6, 7, 8, generator=g), 2 * torch.randn(2, 3, 6, 7, 8, generator=g)
    warp = TraceableWarp("bilinear", "zeros")
    torch.testing.assert_close(warp(image, ddf), Warp("bilinear", "zeros")(image, ddf), rtol=0, atol=1e-6)
    explained = torch._dynamo.explain(TraceableWarp("bilinear", "zeros"))(image, ddf)
    assert explained.graph_break_count == 0, explained.break_reasons

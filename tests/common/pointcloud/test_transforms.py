"""Rotations are rotations (orthogonal, det +1, the right axis fixed, Haar-uniform in a cheap sense); the
augmentations keep the shape of a cloud and do what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from common.pointcloud.transforms import (
    augment,
    normalize_unit_sphere,
    random_point_dropout,
    random_rotations,
    random_so3,
    rotate,
)

G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("kind", ["none", "z", "so3"])
def test_rotations_are_proper_orthogonal(kind):
    r = random_rotations(kind, 200, generator=G, dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand(200, 3, 3)
    torch.testing.assert_close(r @ r.transpose(1, 2), eye, rtol=0, atol=1e-12)
    torch.testing.assert_close(torch.linalg.det(r), torch.ones(200, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("axis", ["y", "z"])
def test_up_rotations_fix_the_up_axis(axis):
    r = random_rotations("z", 50, axis=axis, generator=G, dtype=torch.float64)
    up = torch.zeros(3, dtype=torch.float64)
    up["xyz".index(axis)] = 1
    torch.testing.assert_close(r @ up, up.expand(50, 3), rtol=0, atol=1e-12)
    assert (r @ torch.tensor([1.0, 0, 0], dtype=torch.float64)).std(0).max() > 0.3  # they do turn


def test_so3_is_spread_uniformly():
    """Under a Haar-uniform rotation a fixed unit vector lands uniformly on the sphere: each coordinate has mean 0
    and variance 1/3 (4,000 draws: standard errors 0.009 and 0.0047; bounds at ~5 of them)."""
    v = random_so3(4000, generator=G, dtype=torch.float64) @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert v.mean(0).abs().max() < 0.045
    assert (v.var(0) - 1 / 3).abs().max() < 0.025


def test_rotate_turns_points_and_normals_and_keeps_geometry():
    cloud = torch.randn(2, 20, 6, dtype=torch.float64)
    r = random_so3(2, generator=G, dtype=torch.float64)
    out = rotate(cloud, r)  # one rotation per cloud
    torch.testing.assert_close(out[..., :3].norm(dim=-1), cloud[..., :3].norm(dim=-1))
    torch.testing.assert_close(out[0, 3, 3:], r[0] @ cloud[0, 3, 3:])
    torch.testing.assert_close(out[1, 5, :3], r[1] @ cloud[1, 5, :3])


def test_normalize_unit_sphere():
    xyz = np.random.default_rng(0).normal(3.0, 2.0, size=(100, 3))
    out = normalize_unit_sphere(xyz)
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-12)
    assert np.isclose(np.sqrt((out**2).sum(1)).max(), 1.0)


def test_augmentations_keep_the_count_and_touch_only_what_they_should():
    rng = np.random.default_rng(1)
    cloud = rng.normal(size=(64, 6))
    dropped = random_point_dropout(cloud, np.random.default_rng(3), max_ratio=0.875)
    changed = (dropped != cloud).any(1)
    assert (dropped[changed] == cloud[0]).all()
    out = augment(cloud, rng)
    assert out.shape == cloud.shape
    assert np.isin(out[:, 3:], cloud[:, 3:]).all()  # normals are never scaled or shifted

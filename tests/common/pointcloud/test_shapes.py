"""The procedural shape set: every class builds, clouds are normalised with unit outward-ish normals, parts come
from the composition, the build is deterministic, and area-uniform sampling is area-uniform."""

from __future__ import annotations

import numpy as np

from common.pointcloud.meshes import Mesh, sample_surface
from common.pointcloud.shapes import CLASSES, NUM_PARTS, PARTS, deform, make_shape, make_split


def test_every_class_builds_a_unit_cloud_with_unit_normals_and_its_own_parts():
    rng = np.random.default_rng(0)
    assert len(CLASSES) >= 10 and sum(len(p) for p in PARTS.values()) == NUM_PARTS
    for name in CLASSES:
        cloud, parts = make_shape(name, 512, rng)
        assert cloud.shape == (512, 6) and cloud.dtype == np.float32
        assert np.isclose(np.linalg.norm(cloud[:, :3], axis=1).max(), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(cloud[:, 3:], axis=1), 1.0, atol=1e-5)
        assert set(np.unique(parts)) == set(PARTS[name]), name  # every part of the composition is sampled


def test_normals_of_closed_convex_primitives_point_outward():
    rng = np.random.default_rng(1)
    for name in ("box", "sphere", "cylinder", "cone", "tetrahedron", "octahedron", "icosahedron"):
        cloud, _ = make_shape(name, 512, rng)
        outward = (cloud[:, :3] * cloud[:, 3:]).sum(1)
        assert (outward > 0).mean() > 0.97, name  # deformation bends faces a little, never turns them over


def test_split_is_deterministic_and_balanced():
    a, b = make_split(2, 64, seed=3), make_split(2, 64, seed=3)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert np.bincount(a["label"]).tolist() == [2] * len(CLASSES)
    assert not np.array_equal(make_split(2, 64, seed=4)["points"], a["points"])


def test_deformation_is_smooth_and_non_rigid():
    rng = np.random.default_rng(2)
    v = rng.uniform(-1, 1, (500, 3))
    w = deform(v, rng)
    d_before = np.linalg.norm(v[:, None] - v[None], axis=-1)
    d_after = np.linalg.norm(w[:, None] - w[None], axis=-1)
    assert np.abs(d_after - d_before).max() > 0.05  # not a rigid motion
    near = d_before < 0.05
    assert (d_after[near] < 0.15).all()  # neighbours stay neighbours


def test_sample_surface_is_uniform_by_area_and_takes_face_normals():
    """A 1 x 1 x 3 box: each long face holds 3/14 of the area, each end 1/14 (20,000 points: standard errors
    ~0.003 and ~0.002, bounds at ~4 of them)."""
    import open3d as o3d

    mesh = Mesh.from_open3d(o3d.geometry.TriangleMesh.create_box(1, 1, 3))
    points, normals, _ = sample_surface(mesh, 20_000, np.random.default_rng(0))
    ends = np.abs(normals[:, 2]) > 0.5
    assert abs(ends.mean() - 2 / 14) < 0.01
    assert abs((normals[:, 0] > 0.5).mean() - 3 / 14) < 0.012
    # each point lies on the face whose normal it took
    on_top = normals[:, 2] > 0.5
    np.testing.assert_allclose(points[on_top, 2], 3.0)

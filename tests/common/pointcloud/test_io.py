"""Reading users' files with open3d: every format, meshes sampled with normals, estimated normals that point
outward, and named InputErrors for unreadable or degenerate files."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from common.errors import InputError
from common.pointcloud.io import read_cloud


def sphere_cloud(n=400, seed=0):
    v = np.random.default_rng(seed).normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def write_cloud(path, xyz, normals=None):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    if normals is not None:
        pcd.normals = o3d.utility.Vector3dVector(normals)
    assert o3d.io.write_point_cloud(str(path), pcd)


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_clouds_with_normals_keep_them(tmp_path, suffix):
    xyz = sphere_cloud()
    write_cloud(tmp_path / f"c{suffix}", xyz, -xyz)  # inward on purpose: stored normals are kept as they are
    got, normals = read_cloud(tmp_path / f"c{suffix}")
    np.testing.assert_allclose(got, xyz, atol=1e-6)
    np.testing.assert_allclose(normals, -xyz, atol=1e-6)


def test_xyz_without_normals_gets_outward_estimates(tmp_path):
    xyz = sphere_cloud(800)
    np.savetxt(tmp_path / "c.xyz", xyz)
    got, normals = read_cloud(tmp_path / "c.xyz")
    assert len(got) == 800
    cos = (normals * got).sum(1)  # on the unit sphere the true outward normal is the point itself
    assert np.median(cos) > 0.95 and (cos > 0.8).mean() > 0.95


@pytest.mark.parametrize("suffix", [".off", ".obj", ".ply"])
def test_meshes_are_sampled_with_face_normals(tmp_path, suffix):
    mesh = o3d.geometry.TriangleMesh.create_box(2, 2, 2)
    mesh.translate([-1, -1, -1])
    assert o3d.io.write_triangle_mesh(str(tmp_path / f"m{suffix}"), mesh)
    xyz, normals = read_cloud(tmp_path / f"m{suffix}", mesh_points=2000)
    assert xyz.shape == (2000, 3)
    np.testing.assert_allclose(np.abs(xyz).max(1), 1.0, atol=1e-6)  # on the surface
    assert ((xyz * normals).sum(1) > 0.99).all()  # the outward face normal of a cube centred at 0


def test_bad_files_raise_named_input_errors(tmp_path):
    (tmp_path / "empty.ply").write_bytes(b"")
    (tmp_path / "cloud.txt").write_text("1 2 3\n")
    np.savetxt(tmp_path / "nan.xyz", np.array([[0, 0, 0], [np.nan, 1, 1], [1, 1, 1]]))
    np.savetxt(tmp_path / "few.xyz", sphere_cloud(5))
    np.savetxt(tmp_path / "same.xyz", np.ones((40, 3)))
    cases = {
        "empty.ply": "empty file",
        "cloud.txt": "unknown file type",
        "nan.xyz": "NaN",
        "few.xyz": "too few",
        "same.xyz": "coincide",
        "missing.ply": "not a file",
    }
    for name, problem in cases.items():
        with pytest.raises(InputError, match=problem) as err:
            read_cloud(tmp_path / name)
        assert name in str(err.value)

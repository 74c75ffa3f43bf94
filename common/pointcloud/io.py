"""Read a user's point cloud or mesh (.ply, .pcd, .xyz, .off, .obj) into xyz + unit normals, with open3d.

Meshes are sampled to points with their face normals; clouds without normals get normals estimated from their
neighbours and oriented consistently and outward. Unreadable or degenerate files raise `InputError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.errors import InputError
from common.pointcloud.meshes import Mesh, sample_surface

CLOUD_SUFFIXES = (".ply", ".pcd", ".xyz")
MESH_SUFFIXES = (".off", ".obj", ".ply")
EXPECTED = "a point cloud (.ply, .pcd, .xyz) or a triangle mesh (.off, .obj, .ply)"


def _open3d():
    """open3d, imported when a file is read: importing this module needs no open3d (a ~400 MB wheel that some
    machines, such as the GPU device, lack)."""
    import open3d  # noqa: PLC0415

    return open3d


def _read_mesh(path: Path) -> Mesh | None:
    if path.suffix.lower() not in MESH_SUFFIXES:
        return None
    mesh = _open3d().io.read_triangle_mesh(str(path))
    if len(mesh.triangles) == 0:
        return None  # a .ply of points only
    return Mesh.from_open3d(mesh)


def orient_outward(xyz: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Flip all normals if most point inwards (towards the centroid): consistent but sign-free normals become
    outward for a closed, roughly convex surface."""
    outward = ((xyz - xyz.mean(0)) * normals).sum(1)
    return -normals if np.median(outward) < 0 else normals


def estimate_normals(xyz: np.ndarray, k: int = 16) -> np.ndarray:
    """Unit normals from the k nearest neighbours (open3d's PCA), made consistent over the surface and outward."""
    o3d = _open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    pcd.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    pcd.orient_normals_consistent_tangent_plane(k)
    return orient_outward(xyz, np.asarray(pcd.normals))


def read_cloud(path: str | Path, mesh_points: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(xyz [N, 3], unit normals [N, 3]) of the file at `path`; a mesh is sampled to `mesh_points` points."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CLOUD_SUFFIXES + MESH_SUFFIXES:
        raise InputError(path, EXPECTED, problem=f"unknown file type {suffix!r}")
    if not path.is_file() or path.stat().st_size == 0:
        raise InputError(path, EXPECTED, problem="empty file" if path.is_file() else "not a file")
    mesh = _read_mesh(path)
    if mesh is not None:
        if not np.isfinite(mesh.vertices).all():
            raise InputError(path, EXPECTED, problem="NaN or infinite vertex coordinates")
        try:
            xyz, normals, _ = sample_surface(mesh, mesh_points, np.random.default_rng(seed))
        except ValueError as e:
            raise InputError(path, EXPECTED, problem=str(e)) from e
        return xyz, normals
    pcd = _open3d().io.read_point_cloud(str(path))
    xyz = np.asarray(pcd.points, dtype=np.float64)
    if len(xyz) == 0:
        raise InputError(path, EXPECTED, problem="no points could be read")
    if not np.isfinite(xyz).all():
        raise InputError(path, EXPECTED, problem="NaN or infinite coordinates")
    if np.ptp(xyz, axis=0).max() <= 0:
        raise InputError(path, EXPECTED, problem="all points coincide")
    if pcd.has_normals():
        normals = np.asarray(pcd.normals, dtype=np.float64)
        length = np.linalg.norm(normals, axis=1, keepdims=True)
        if np.isfinite(normals).all() and (length > 1e-8).all():
            return xyz, normals / length
    if len(xyz) < 16:
        raise InputError(path, EXPECTED, problem=f"{len(xyz)} points are too few to estimate normals from")
    return xyz, estimate_normals(xyz)

"""Meshes as arrays, and area-uniform sampling of points with their face normals (and the face each came from)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import open3d as o3d


@dataclass
class Mesh:
    """A triangle mesh as arrays: vertices [V, 3] float64, triangles [T, 3] int64, a label per triangle [T]."""

    vertices: np.ndarray
    triangles: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_open3d(cls, mesh: o3d.geometry.TriangleMesh, label: int = 0) -> Mesh:
        tris = np.asarray(mesh.triangles, dtype=np.int64)
        return cls(np.asarray(mesh.vertices, dtype=np.float64).copy(), tris, np.full(len(tris), label))

    @staticmethod
    def merge(parts: list[Mesh]) -> Mesh:
        offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
        return Mesh(
            np.concatenate([p.vertices for p in parts]),
            np.concatenate([p.triangles + o for p, o in zip(parts, offsets)]),
            np.concatenate([p.labels for p in parts]),
        )

    def face_normals(self) -> tuple[np.ndarray, np.ndarray]:
        """Unit face normals [T, 3] (by the winding: outward for a consistently wound closed mesh) and areas [T]."""
        a, b, c = (self.vertices[self.triangles[:, i]] for i in range(3))
        cross = np.cross(b - a, c - a)
        norm = np.linalg.norm(cross, axis=1)
        return cross / np.maximum(norm, 1e-300)[:, None], 0.5 * norm


def sample_surface(mesh: Mesh, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n points uniform on the surface: (points [n, 3], their face normals [n, 3], the face labels [n]).

    Faces are drawn with probability proportional to area, points uniform inside each (square-root barycentric
    rule); a point takes its face's normal, so the sharp edges of a box keep their true normals."""
    normals, areas = mesh.face_normals()
    if not np.isfinite(areas).all() or areas.sum() <= 0:
        raise ValueError("the mesh has no surface area")
    face = rng.choice(len(areas), size=n, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.random(n))[:, None], rng.random(n)[:, None]
    a, b, c = (mesh.vertices[mesh.triangles[face, i]] for i in range(3))
    points = (1 - r1) * a + r1 * (1 - r2) * b + r1 * r2 * c
    return points, normals[face], mesh.labels[face]

"""The procedural shape set: 13 classes of primitives and composites built with open3d, each with random
proportions and a random smooth non-rigid deformation, sampled to points with normals and part labels.

Shapes are built upright (z up) in a canonical pose; the rotation protocols act on them later. Part labels come
from the composition (a table's top and legs, a mug's body and handle); single-part classes have one part.
Part ids are global (ShapeNetPart's convention): `PARTS[name]` lists a class's ids.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from common.pointcloud.meshes import Mesh, sample_surface
from common.pointcloud.transforms import normalize_unit_sphere

if TYPE_CHECKING:
    import open3d as o3d


def _tm():
    """open3d's TriangleMesh, imported only when a shape is built: reading a built set needs no open3d (a ~400 MB
    wheel that some machines, such as the GPU device, lack)."""
    import open3d as o3d  # noqa: PLC0415

    return o3d.geometry.TriangleMesh


def _m(mesh: o3d.geometry.TriangleMesh, label: int = 0) -> Mesh:
    return Mesh.from_open3d(mesh, label)


def _box(w, d, h, centre=(0.0, 0.0, 0.0), label=0) -> Mesh:
    m = _m(_tm().create_box(w, d, h), label)
    m.vertices += np.asarray(centre) - np.array([w, d, h]) / 2
    return m


def _cylinder(r, h, centre=(0.0, 0.0, 0.0), label=0, resolution=24) -> Mesh:
    m = _m(_tm().create_cylinder(r, h, resolution=resolution), label)
    m.vertices += np.asarray(centre)
    return m


def box(rng):
    return [_box(*rng.uniform(0.4, 1.0, 3))]


def sphere(rng):
    m = _m(_tm().create_sphere(1.0, resolution=16))
    m.vertices *= rng.uniform(0.8, 1.0, 3)
    return [m]


def cylinder(rng):
    return [_cylinder(rng.uniform(0.2, 0.5), rng.uniform(0.6, 1.6))]


def cone(rng):
    m = _m(_tm().create_cone(rng.uniform(0.3, 0.6), rng.uniform(0.6, 1.4), resolution=24))
    return [m]


def torus(rng):
    return [_m(_tm().create_torus(rng.uniform(0.6, 1.0), rng.uniform(0.12, 0.3), 30, 12))]


def capsule(rng):
    """A sphere whose halves move apart: the triangles across the equator become the cylindrical body (part 1)."""
    m = _m(_tm().create_sphere(1.0, resolution=16))
    up = m.vertices[:, 2] > 0
    m.vertices[:, 2] += np.where(up, 1.0, -1.0) * rng.uniform(0.5, 1.5) / 2
    across = up[m.triangles].any(1) & ~up[m.triangles].all(1)
    m.labels = across.astype(np.int64)
    m.vertices *= [*(rng.uniform(0.3, 0.5) * np.ones(2)), 0.5]
    return [m]


def moebius(rng):
    m = _m(_tm().create_mobius(length_split=60, width_split=8, twists=1, width=rng.uniform(0.4, 0.8)))
    m.vertices *= [1.0, 1.0, rng.uniform(0.5, 1.5)]
    return [m]


def arrow(rng):
    shaft_h, head_h = rng.uniform(0.8, 1.6), rng.uniform(0.3, 0.6)
    shaft = _cylinder(rng.uniform(0.05, 0.12), shaft_h, (0, 0, shaft_h / 2), label=0, resolution=16)
    head = _m(_tm().create_cone(rng.uniform(0.18, 0.3), head_h, resolution=20), 1)
    head.vertices[:, 2] += shaft_h
    return [shaft, head]


def tetrahedron(rng):
    return [_m(_tm().create_tetrahedron(rng.uniform(0.6, 1.0)))]


def octahedron(rng):
    return [_m(_tm().create_octahedron(rng.uniform(0.6, 1.0)))]


def icosahedron(rng):
    return [_m(_tm().create_icosahedron(rng.uniform(0.6, 1.0)))]


def table(rng):
    w, d, t, h = rng.uniform(1.0, 1.6), rng.uniform(0.6, 1.2), rng.uniform(0.04, 0.1), rng.uniform(0.5, 1.0)
    r = rng.uniform(0.03, 0.07)
    parts = [_box(w, d, t, (0, 0, h + t / 2), label=0)]
    inset = rng.uniform(0.05, 0.15)
    for sx in (-1, 1):
        for sy in (-1, 1):
            parts.append(_cylinder(r, h, (sx * (w / 2 - inset), sy * (d / 2 - inset), h / 2), label=1, resolution=10))
    return parts


def mug(rng):
    r, h = rng.uniform(0.3, 0.5), rng.uniform(0.6, 1.1)
    body = _cylinder(r, h, label=0)
    handle = _m(_tm().create_torus(rng.uniform(0.18, 0.3) * h / 0.8, rng.uniform(0.03, 0.06), 24, 8), 1)
    v = handle.vertices  # the torus lies in xy: stand it up in xz, keep the half outside the body
    handle.vertices = np.stack([v[:, 0], v[:, 2], v[:, 1]], 1)
    keep = handle.vertices[:, 0] >= 0
    tris = handle.triangles[keep[handle.triangles].all(1)]
    handle.triangles, handle.labels = tris, np.ones(len(tris), dtype=np.int64)
    handle.vertices[:, 0] += r
    return [body, handle]


BUILDERS = {
    "box": box, "sphere": sphere, "cylinder": cylinder, "cone": cone, "torus": torus, "capsule": capsule,
    "moebius": moebius, "arrow": arrow, "tetrahedron": tetrahedron, "octahedron": octahedron,
    "icosahedron": icosahedron, "table": table, "mug": mug,
}  # fmt: skip
CLASSES = list(BUILDERS)
PART_COUNTS = {"capsule": 2, "arrow": 2, "table": 2, "mug": 2}
PARTS: dict[str, list[int]] = {}
for _name in CLASSES:
    _start = sum(len(v) for v in PARTS.values())
    PARTS[_name] = list(range(_start, _start + PART_COUNTS.get(_name, 1)))
NUM_PARTS = sum(len(v) for v in PARTS.values())


def deform(v: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A random smooth non-rigid map of points [V, 3] (z up, roughly unit size): taper, bend, twist and a
    low-frequency sinusoidal displacement; small enough to keep a surface's orientation."""
    v = v - v.mean(0)
    z = v[:, 2] / max(np.abs(v[:, 2]).max(), 1e-9)  # in [-1, 1]
    taper = 1 + strength * rng.uniform(-0.2, 0.2) * z
    twist = strength * rng.uniform(-0.4, 0.4) * z
    c, s = np.cos(twist), np.sin(twist)
    x, y = taper * v[:, 0], taper * v[:, 1]
    out = np.stack([c * x - s * y, s * x + c * y, v[:, 2]], 1)
    out[:, :2] += strength * rng.uniform(-0.15, 0.15, 2) * (z**2)[:, None]  # bend
    freq, phase = rng.uniform(1.0, 2.5, (3, 3)), rng.uniform(0, 2 * np.pi, 3)
    out += strength * 0.03 * np.sin(out @ freq.T + phase)
    return out


def make_shape(name: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One random shape of class `name`: (cloud [n, 6] float32 of unit-sphere xyz + unit normals, global part
    ids [n])."""
    mesh = Mesh.merge(BUILDERS[name](rng))
    mesh.vertices = deform(mesh.vertices, rng)
    xyz, normals, local = sample_surface(mesh, n, rng)
    cloud = np.concatenate([normalize_unit_sphere(xyz), normals], 1).astype(np.float32)
    return cloud, np.asarray(PARTS[name])[local]


def make_split(per_class: int, n: int, seed: int) -> dict[str, np.ndarray]:
    """`per_class` shapes of every class: points [S, n, 6], label [S], parts [S, n]."""
    rng = np.random.default_rng(seed)
    clouds, labels, parts = [], [], []
    for label, name in enumerate(CLASSES):
        for _ in range(per_class):
            cloud, part = make_shape(name, n, rng)
            clouds.append(cloud)
            labels.append(label)
            parts.append(part)
    return {"points": np.stack(clouds), "label": np.array(labels), "parts": np.stack(parts).astype(np.int64)}

"""Rotations, normalisation and the official training augmentations of xyz+normal clouds [..., N, 6].

Rotations act on the coordinates and on the normals (row vectors: p' = p R^T). The augmentations are the
official code's (`provider.py` of PointNet++): point dropout, a random scale, a random shift; none rotates.
"""

from __future__ import annotations

import math

import numpy as np
import torch

AXES = {"x": 0, "y": 1, "z": 2}


def random_so3(n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
    """n rotation matrices [n, 3, 3], uniform on SO(3) (Haar): unit quaternions from a normal draw."""
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    w, x, y, z = (q / q.norm(dim=-1, keepdim=True)).unbind(-1)
    r = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return r.reshape(n, 3, 3).to(dtype)


def axis_rotation(angles: torch.Tensor, axis: str = "z") -> torch.Tensor:
    """Rotations [n, 3, 3] by `angles` [n] (radians) about one coordinate axis."""
    c, s = angles.cos(), angles.sin()
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    i, j = [a for a in range(3) if a != AXES[axis]]  # the plane that turns
    r = torch.stack([one, zero, zero, zero, one, zero, zero, zero, one], -1).reshape(-1, 3, 3).clone()
    r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
    return r


def random_up_rotation(n: int, axis: str = "z", generator: torch.Generator | None = None, dtype=torch.float32):
    """n rotations about the up axis by uniform angles: the 'z' of the z/z and z/SO3 protocols."""
    angles = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
    return axis_rotation(angles, axis).to(dtype)


def random_rotations(kind: str, n: int, axis: str = "z", generator=None, dtype=torch.float32) -> torch.Tensor:
    """n rotations of a protocol's kind: "none" (identity), "z" (about the up axis) or "so3"."""
    if kind == "none":
        return torch.eye(3, dtype=dtype).expand(n, 3, 3).clone()
    if kind == "z":
        return random_up_rotation(n, axis, generator, dtype)
    if kind == "so3":
        return random_so3(n, generator, dtype)
    raise ValueError(f"rotation kind {kind!r}: expected none, z or so3")


def rotate(cloud: torch.Tensor, rotation: torch.Tensor) -> torch.Tensor:
    """Rotate xyz (and normals, when the last dim is 6) of `cloud` [*B, N, 3|6] by `rotation` [*B, 3, 3]."""
    rt = rotation.transpose(-1, -2).to(cloud.dtype)
    parts = [cloud[..., :3] @ rt]
    if cloud.shape[-1] == 6:
        parts.append(cloud[..., 3:] @ rt)
    return torch.cat(parts, -1)


def normalize_unit_sphere(xyz: np.ndarray) -> np.ndarray:
    """Centre at the centroid and scale the farthest point to radius 1 (the official `pc_normalize`)."""
    centred = xyz - xyz.mean(0, keepdims=True)
    radius = np.sqrt((centred**2).sum(1)).max()
    return centred / (radius if radius > 0 else 1.0)


def random_point_dropout(cloud: np.ndarray, rng: np.random.Generator, max_ratio: float = 0.875) -> np.ndarray:
    """Replace a random fraction (up to `max_ratio`) of the points by the first point, keeping N fixed."""
    ratio = rng.random() * max_ratio
    drop = rng.random(len(cloud)) <= ratio
    out = cloud.copy()
    out[drop] = cloud[0]
    return out


def random_scale(cloud: np.ndarray, rng: np.random.Generator, low: float = 0.8, high: float = 1.25) -> np.ndarray:
    out = cloud.copy()
    out[:, :3] *= rng.uniform(low, high)
    return out


def random_shift(cloud: np.ndarray, rng: np.random.Generator, shift: float = 0.1) -> np.ndarray:
    out = cloud.copy()
    out[:, :3] += rng.uniform(-shift, shift, size=3)
    return out


def augment(cloud: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The official training augmentations, in its order: dropout, scale, shift."""
    return random_shift(random_scale(random_point_dropout(cloud, rng), rng), rng)

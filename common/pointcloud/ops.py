"""Sampling, grouping and interpolation on batched point clouds, in plain PyTorch.

The official PointNet++-style code builds these as a CUDA extension (`pointops`), which is what its users trip
over; here they are torch ops that run on any device, export, and are tested against brute force.
"""

from __future__ import annotations

import torch


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """points[b, idx[b, ...]]: [B, N, C] with idx [B, *S] -> [B, *S, C]."""
    b, c = points.shape[0], points.shape[-1]
    flat = idx.reshape(b, -1)
    out = points.gather(1, flat.unsqueeze(-1).expand(-1, -1, c))
    return out.reshape(*idx.shape, c)


def full_precision(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Floating tensors in at least float32 (float64 stays; integer ones pass), for geometry that must not run in
    bf16/fp16."""
    return tuple(t.to(torch.promote_types(t.dtype, torch.float32)) if t.is_floating_point() else t for t in tensors)


def square_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances [B, S, N] between a [B, S, 3] and b [B, N, 3], clamped at 0.

    The expanded form |a|^2 + |b|^2 - 2 a.b keeps memory at O(S N) instead of O(S N 3). Autocast is off: in
    bf16 the matrix product would rank neighbours by 3 significant digits."""
    with torch.autocast(a.device.type, enabled=False):
        a, b = full_precision(a, b)
        d = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(1) - 2 * a @ b.transpose(1, 2)
    return d.clamp_min(0)


def farthest_point_sample(xyz: torch.Tensor, npoint: int) -> torch.Tensor:
    """Indices [B, npoint] of farthest point sampling, starting from point 0 of each cloud.

    A fixed start (the official code draws it at random) makes sampling a function of the cloud alone: the same
    points are chosen for any rotation of the input, which the rotation-invariance tests rely on.
    """
    b, n, _ = xyz.shape
    if not 0 < npoint <= n:
        raise ValueError(f"farthest_point_sample: npoint={npoint} must be in [1, {n}]")
    idx = torch.zeros(b, npoint, dtype=torch.long, device=xyz.device)
    nearest = torch.full((b, n), float("inf"), dtype=xyz.dtype, device=xyz.device)
    farthest = torch.zeros(b, dtype=torch.long, device=xyz.device)
    batch = torch.arange(b, device=xyz.device)
    for i in range(npoint):
        idx[:, i] = farthest
        centre = xyz[batch, farthest].unsqueeze(1)
        nearest = torch.minimum(nearest, ((xyz - centre) ** 2).sum(-1))
        farthest = nearest.argmax(-1)
    return idx


def knn(query: torch.Tensor, points: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest `points` [B, N, 3] of each `query` [B, S, 3], nearest first: (squared distances, indices),
    each [B, S, k]."""
    if not 0 < k <= points.shape[1]:
        raise ValueError(f"knn: k={k} must be in [1, {points.shape[1]}]")
    dist, idx = square_distance(query, points).topk(k, dim=-1, largest=False, sorted=True)
    return dist, idx


def knn_interpolate(
    query: torch.Tensor, points: torch.Tensor, features: torch.Tensor, k: int = 3, eps: float = 1e-8
) -> torch.Tensor:
    """Features at `query` [B, S, 3] interpolated from `features` [B, N, C] at `points` [B, N, 3]: the
    inverse-squared-distance weighted mean of the k nearest (PointNet++'s feature propagation). -> [B, S, C]"""
    dist, idx = knn(query, points, k)
    weight = 1.0 / (dist + eps)
    weight = weight / weight.sum(-1, keepdim=True)
    return (gather_points(features, idx) * weight.unsqueeze(-1)).sum(-2)

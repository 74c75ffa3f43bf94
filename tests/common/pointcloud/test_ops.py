"""Sampling, grouping and interpolation against brute-force loops over single clouds."""

from __future__ import annotations

import itertools

import pytest
import torch

from common.pointcloud.ops import farthest_point_sample, gather_points, knn, knn_interpolate, square_distance


def cloud(b=3, n=50, seed=0):
    return torch.rand(b, n, 3, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_square_distance_matches_pairwise_differences():
    a, p = cloud(2, 7, 1), cloud(2, 11, 2)
    brute = ((a[:, :, None] - p[:, None]) ** 2).sum(-1)
    torch.testing.assert_close(square_distance(a, p), brute, rtol=0, atol=1e-12)


def test_gather_points_is_per_batch_indexing():
    p = cloud()
    idx = torch.randint(0, 50, (3, 4, 5))
    out = gather_points(p, idx)
    for b, s, k in itertools.product(range(3), range(4), range(5)):
        assert torch.equal(out[b, s, k], p[b, idx[b, s, k]])


def brute_fps(xyz, m):
    """Greedy max-min: each next point maximises its distance to the chosen set, starting from point 0."""
    chosen = [0]
    while len(chosen) < m:
        d = torch.stack([((xyz - xyz[c]) ** 2).sum(-1) for c in chosen]).min(0).values
        chosen.append(int(d.argmax()))
    return chosen


def test_farthest_point_sample_matches_greedy_max_min():
    xyz = cloud(3, 64)
    idx = farthest_point_sample(xyz, 16)
    for b in range(3):
        assert idx[b].tolist() == brute_fps(xyz[b], 16)
    assert len(set(idx[0].tolist())) == 16  # distinct points


def test_farthest_point_sample_covers_the_cloud_better_than_a_random_subset():
    """The covering radius (farthest point to its nearest sample) of FPS beats random subsets of equal size."""
    xyz = cloud(1, 400, 3)
    fps = gather_points(xyz, farthest_point_sample(xyz, 32))
    radius = square_distance(xyz, fps).min(-1).values.max()
    rand = [square_distance(xyz, xyz[:, torch.randperm(400)[:32]]).min(-1).values.max() for _ in range(20)]
    assert radius < min(rand)


def test_farthest_point_sample_refuses_bad_counts():
    with pytest.raises(ValueError, match="npoint"):
        farthest_point_sample(cloud(1, 5), 6)


def test_knn_matches_sorting_all_distances():
    q, p = cloud(2, 9, 4), cloud(2, 40, 5)
    dist, idx = knn(q, p, 6)
    for b, s in itertools.product(range(2), range(9)):
        d = ((p[b] - q[b, s]) ** 2).sum(-1)
        order = d.argsort()[:6]
        assert idx[b, s].tolist() == order.tolist()
        torch.testing.assert_close(dist[b, s], d[order], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="k=41"):
        knn(q, p, 41)


def test_knn_interpolate_matches_weighted_mean_and_is_exact_at_the_points():
    p, q = cloud(2, 30, 6), cloud(2, 8, 7)
    f = torch.randn(2, 30, 5, dtype=torch.float64)
    out = knn_interpolate(q, p, f, k=3)
    for b, s in itertools.product(range(2), range(8)):
        d = ((p[b] - q[b, s]) ** 2).sum(-1)
        near = d.argsort()[:3]
        w = 1 / (d[near] + 1e-8)
        torch.testing.assert_close(out[b, s], (w[:, None] * f[b, near]).sum(0) / w.sum())
    # at a data point its own feature dominates: weight 1/eps against 1/d^2 of the others
    torch.testing.assert_close(knn_interpolate(p, p, f), f, rtol=0, atol=1e-5)

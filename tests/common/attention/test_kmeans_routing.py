"""Routing attention: k-means routing, within-cluster attention, EMA centroid updates."""

import math

import pytest
import torch
import torch.nn.functional as F

from common.attention import build
from common.attention.kmeans_routing import KMeansRoutingAttention
from common.errors import ConfigError
from tests.common.attention.helpers_c import (
    TOL,
    assert_causal,
    assert_mask_honoured,
    assert_shape_and_grads,
    looks_ahead,
    make_input,
    padding_mask,
    run_mha,
    torch_mha,
)

DIM, HEADS = 16, 2


def _routing(**options) -> KMeansRoutingAttention:
    torch.manual_seed(0)
    return build("kmeans_routing", DIM, HEADS, **options).double().eval()


@pytest.mark.parametrize(
    "options", [{}, {"assignment": "membership"}, {"shared_qk": True}, {"causal": True, "shared_qk": True}]
)
def test_shapes_and_gradients(options):
    x = make_input(n=12, c=DIM)
    assert_shape_and_grads(_routing(num_clusters=3, **options), x, mask=padding_mask(2, 12, [12, 9]))


@pytest.mark.parametrize("assignment", ["topw", "membership"])
def test_one_cluster_is_full_attention(assignment):
    module = _routing(num_clusters=1, assignment=assignment)
    w = module.qkv.weight
    mha = torch_mha(DIM, HEADS, w, module.qkv.bias, module.proj.weight, module.proj.bias)
    x, mask = make_input(c=DIM), padding_mask(2, 10, [10, 6])
    torch.testing.assert_close(module(x), run_mha(mha, x), **TOL)
    torch.testing.assert_close(module(x, mask=mask)[mask], run_mha(mha, x, mask)[mask], **TOL)


def test_topw_matches_a_per_cluster_loop():
    """Each centroid: its w nearest queries attend (softmax) to its w nearest keys; outputs averaged per query."""
    module = _routing(num_clusters=3, window=4)
    x = make_input(1, 9, DIM)
    b, n, h, d = 1, 9, HEADS, DIM // HEADS
    q, k, v = module.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    expected = torch.zeros(b, h, n, d, dtype=torch.float64)
    for head in range(h):
        centroids = module.centroids[head]
        q_near = (F.normalize(q[0, head], dim=-1) @ centroids.T).topk(4, dim=0).indices  # [w, K]
        k_near = (F.normalize(k[0, head], dim=-1) @ centroids.T).topk(4, dim=0).indices
        total, count = torch.zeros(n, d, dtype=torch.float64), torch.zeros(n, 1, dtype=torch.float64)
        for c in range(3):
            qi, ki = q_near[:, c], k_near[:, c]
            weights = (q[0, head, qi] @ k[0, head, ki].T / math.sqrt(d)).softmax(-1)
            total[qi] += weights @ v[0, head, ki]
            count[qi] += 1
        expected[0, head] = total / count.clamp_min(1)
    expected = module.proj(expected.transpose(1, 2).reshape(b, n, DIM))
    torch.testing.assert_close(module(x), expected, **TOL)


def test_membership_matches_dense_reference():
    """Query i attends key j iff their nearest centroids agree (or i == j)."""
    module = _routing(num_clusters=3, assignment="membership")
    x = make_input(1, 12, DIM)
    b, n, h, d = 1, 12, HEADS, DIM // HEADS
    q, k, v = module.qkv(x).reshape(b, n, 3, h, d).permute(2, 0, 3, 1, 4)
    q_cluster = (F.normalize(q, dim=-1) @ module.centroids.transpose(1, 2)).argmax(-1)  # [B, H, N]
    k_cluster = (F.normalize(k, dim=-1) @ module.centroids.transpose(1, 2)).argmax(-1)
    allowed = (q_cluster[..., :, None] == k_cluster[..., None, :]) | torch.eye(n, dtype=torch.bool)
    assert not allowed.all() and (allowed.sum(-1) > 1).any(), "routing must be non-trivial here"
    scores = (q @ k.transpose(-2, -1) / math.sqrt(d)).masked_fill(~allowed, -torch.inf)
    expected = module.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b, n, DIM))
    torch.testing.assert_close(module(x), expected, **TOL)


def test_mask_and_causality():
    x = make_input(n=12, c=DIM)
    mask = padding_mask(2, 12, [8, 12])
    assert_mask_honoured(_routing(num_clusters=2), x, mask)
    assert_mask_honoured(_routing(num_clusters=2, assignment="membership"), x, mask)
    assert_causal(_routing(num_clusters=2, causal=True), x, t=6)
    assert looks_ahead(_routing(num_clusters=2, assignment="membership"), x, t=6)
    with pytest.raises(ConfigError):
        KMeansRoutingAttention(DIM, HEADS, causal=True, assignment="topw")


def test_centroids_move_toward_the_data():
    module = KMeansRoutingAttention(4, 1, num_clusters=2, ema_decay=0.8).double()
    direction = F.normalize(torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64), dim=0)
    with torch.no_grad():
        module.centroids.copy_(F.normalize(torch.tensor([[[1.0, 1.0, 0.0, 0.0], [-1.0, -2.0, 1.0, 0.0]]]), dim=-1))
    noise = torch.randn(1, 1, 32, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    points = F.normalize(direction + 0.05 * noise, dim=-1)  # one tight cluster near `direction`
    target = F.normalize(points.mean(2)[0, 0], dim=0)  # the cluster's mean direction
    far = module.centroids[0, 1].clone()
    closeness = [float(module.centroids[0, 0] @ target)]
    for _ in range(20):
        module.update_centroids(points, points)
        closeness.append(float(module.centroids[0, 0] @ target))
    assert all(b > a for a, b in zip(closeness, closeness[1:], strict=False)), closeness
    assert closeness[0] < 0.9 and closeness[-1] > 0.999
    assert float(module.centroids[0, 0] @ direction) > 0.99
    torch.testing.assert_close(module.centroids[0, 1], far)  # no point assigned: unchanged
    torch.testing.assert_close(module.centroids.norm(dim=-1), torch.ones(1, 2, dtype=torch.float64))


def test_training_forward_updates_centroids_but_eval_does_not():
    module = _routing(num_clusters=3)
    x = make_input(c=DIM)
    before = module.centroids.clone()
    module(x)
    torch.testing.assert_close(module.centroids, before, rtol=0, atol=0)
    module.train()(x)
    assert not torch.equal(module.centroids, before)
    assert module.centroids.grad is None

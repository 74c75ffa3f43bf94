"""SCGC losses: DEC target and KL, the neighbour-contrastive loss (full and mini-batch), graph targets."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from apps.scgc.losses import (
    adjacency_target,
    cosine_similarity_matrix,
    kl_loss,
    minibatch_contrastive_loss,
    neighbour_contrastive_loss,
    normalized_adjacency,
    target_block,
    target_distribution,
    to_torch_sparse,
)

PATH4 = np.array([[0, 1, 2], [1, 2, 3]])  # path 0-1-2-3, one direction only


def random_graph(n=30, p=0.12, seed=0):
    rng = np.random.default_rng(seed)
    a = np.triu(rng.random((n, n)) < p, 1)
    return np.stack(np.nonzero(a))


def dense_normalized(edge_index, n):
    a = np.zeros((n, n))
    a[edge_index[0], edge_index[1]] = 1
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 1)
    return a / a.sum(1, keepdims=True)


def test_normalized_adjacency_is_row_normalised_with_self_loops():
    a = normalized_adjacency(PATH4, 4).toarray()
    want = np.array([[1 / 2, 1 / 2, 0, 0], [1 / 3, 1 / 3, 1 / 3, 0], [0, 1 / 3, 1 / 3, 1 / 3], [0, 0, 1 / 2, 1 / 2]])
    np.testing.assert_allclose(a, want)
    # duplicate edges, both directions and explicit self-loops change nothing
    messy = np.array([[0, 1, 1, 2, 3, 2, 0], [1, 0, 2, 1, 2, 3, 0]])
    np.testing.assert_allclose(normalized_adjacency(messy, 4).toarray(), want)


def test_contrastive_loss_hand_computed_on_four_nodes():
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    target = torch.from_numpy(adjacency_target(PATH4, 4, order=1, influence=False).toarray())
    e = math.e
    # S = [[0,0,1,-1],[0,0,0,0],[1,0,0,-1],[-1,0,-1,0]]; rows of Â as above; tau = 1
    terms = [
        -math.log(1.0 / (2 + e + 1 / e)),  # node 0: neighbours 0,1 have exp(S)=1
        -math.log(1.0 / 4),  # node 1: all similarities 0
        -math.log(((1 + 1 + 1 / e) / 3) / (e + 2 + 1 / e)),  # node 2: neighbours 1,2,3
        -math.log(((1 / e + 1) / 2) / (2 + 2 / e)),  # node 3: neighbours 2,3
    ]
    got = neighbour_contrastive_loss(z, target, tau=1.0)
    assert got.item() == pytest.approx(sum(terms) / 4, abs=1e-6)
    # tau multiplies the similarity: tau=2 equals tau=1 on doubled similarities, not on halved ones
    s = cosine_similarity_matrix(z)
    manual = -torch.log((torch.exp(2 * s) * target).sum(1) / torch.exp(2 * s).sum(1)).mean()
    torch.testing.assert_close(neighbour_contrastive_loss(z, target, tau=2.0), manual, atol=1e-6, rtol=1e-6)


def test_cosine_similarity_has_zero_diagonal():
    s = cosine_similarity_matrix(torch.randn(6, 3))
    assert torch.all(torch.diagonal(s) == 0)
    assert torch.all(s.abs() <= 1 + 1e-6)


@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_targets_match_dense_powers(order):
    n = 25
    ei = random_graph(n)
    a = dense_normalized(ei, n)
    powers = [np.linalg.matrix_power(a, k) for k in range(1, order + 1)]
    np.testing.assert_allclose(
        adjacency_target(ei, n, order, influence=False).toarray(), powers[-1], rtol=1e-5, atol=1e-7
    )
    np.testing.assert_allclose(
        adjacency_target(ei, n, order, influence=True).toarray(), sum(powers), rtol=1e-5, atol=1e-6
    )


def test_sparse_target_equals_dense_target():
    torch.manual_seed(0)
    n = 30
    t = adjacency_target(random_graph(n), n, 2, influence=True)
    z = torch.randn(n, 5)
    dense = neighbour_contrastive_loss(z, torch.from_numpy(t.toarray()), 0.7)
    sparse = neighbour_contrastive_loss(z, to_torch_sparse(t), 0.7)
    torch.testing.assert_close(dense, sparse)


def test_target_block_is_the_sub_matrix():
    n = 20
    t = adjacency_target(random_graph(n, seed=3), n, 2, influence=False)
    idx = np.array([7, 2, 19, 0, 5])
    np.testing.assert_allclose(target_block(t, idx).numpy(), t.toarray()[idx][:, idx], rtol=1e-6)


def test_minibatch_equals_full_when_the_batch_is_the_whole_graph():
    torch.manual_seed(0)
    n = 30
    t = adjacency_target(random_graph(n), n, 3, influence=False)
    z = torch.randn(n, 6)
    full = neighbour_contrastive_loss(z, torch.from_numpy(t.toarray()), 1.0)
    perm = torch.randperm(n)  # any order of the nodes
    batched = minibatch_contrastive_loss(z[perm], t, perm, 1.0)
    torch.testing.assert_close(batched, full)


def test_minibatch_estimator_statistics():
    """What the batched loss approximates (documented in `minibatch_contrastive_loss`).

    For a uniformly random batch B containing node i, the in-batch sums over j != i of w_ij (with
    w = exp(tau S) * T or w = exp(tau S)) are unbiased for (|B|-1)/(N-1) times the full sums: checked
    over 3000 random batches to 3%. The loss itself (a log of a ratio) is only consistent: the mean
    batched loss approaches the full loss as the batch grows and equals it at |B| = N.
    """
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n, bsz, tau = 40, 10, 1.0
    t = adjacency_target(random_graph(n, p=0.15), n, 2, influence=False)
    dense = t.toarray()
    z = torch.randn(n, 4)
    e = torch.exp(tau * cosine_similarity_matrix(z)).numpy().astype(np.float64)
    off = 1 - np.eye(n)
    full_pos, full_all = (e * dense * off).sum(1), (e * off).sum(1)
    acc_pos, acc_all, hits = np.zeros(n), np.zeros(n), np.zeros(n)
    for _ in range(3000):
        idx = rng.choice(n, bsz, replace=False)
        sub = np.ix_(idx, idx)
        m = off[sub]
        acc_pos[idx] += (e[sub] * dense[sub] * m).sum(1)
        acc_all[idx] += (e[sub] * m).sum(1)
        hits[idx] += 1
    scale = (bsz - 1) / (n - 1)
    np.testing.assert_allclose(acc_all / hits, scale * full_all, rtol=0.03)
    np.testing.assert_allclose(acc_pos.sum() / hits.sum(), scale * full_pos.mean(), rtol=0.03)

    full = neighbour_contrastive_loss(z, torch.from_numpy(dense), tau).item()
    gaps = []
    for b in (5, 10, 20, 40):
        losses = [
            minibatch_contrastive_loss(z[idx], t, idx, tau).item()
            for idx in (torch.randperm(n)[:b] for _ in range(400))
        ]
        gaps.append(abs(np.mean(losses) - full))
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert gaps[3] < 1e-5


def test_target_distribution_properties():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(50, 4), dim=1)
    p = target_distribution(q)
    assert torch.all(p >= 0)
    torch.testing.assert_close(p.sum(1), torch.ones(50))
    # p_ij ∝ q_ij² / f_j with f_j = Σ_i q_ij
    want = q**2 / q.sum(0)
    torch.testing.assert_close(p, want / want.sum(1, keepdim=True))
    # with balanced clusters it only sharpens: same argmax, more confident
    qb = torch.cat([q, q.roll(1, dims=1), q.roll(2, dims=1), q.roll(3, dims=1)])
    pb = target_distribution(qb)
    assert torch.equal(pb.argmax(1), qb.argmax(1))
    assert torch.all(pb.max(1).values >= qb.max(1).values - 1e-7)


def test_kl_loss_is_batchmean_kl():
    torch.manual_seed(0)
    q = torch.softmax(torch.randn(8, 3), dim=1)
    p = target_distribution(q)
    want = (p * (p.log() - q.log())).sum() / 8
    torch.testing.assert_close(kl_loss(p, q), want)
    assert kl_loss(p, p).abs() < 1e-6 and kl_loss(p, q) > 0
    torch.testing.assert_close(kl_loss(p, q), F.kl_div(q.log(), p, reduction="batchmean"))

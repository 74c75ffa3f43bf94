"""SCGC's losses: DEC self-training (KL(p||q)) and the neighbour-contrastive loss with its graph target.

Adjacency normalisation (matching the official code, `utils.load_graph` + `train.get_A_r_flex`):
the edge list is symmetrised and binarised, self-loops are added and the matrix is **row-normalised**,
Â = D⁻¹(A + I) with D the degree of A + I. The contrastive target is then

- SCGC:  T = Â^r                       (`order` = r)
- SCGC*: T = Â + Â² + ... + Â^r        (IAC, influence-augmented contrastive, `--influence` in the code)

The official code forms these powers with dense N×N matrices; here they are products of scipy sparse
matrices, so a big, sparse graph never needs a dense N×N power (the full-batch loss still builds the
N×N similarity matrix, as the paper does; the mini-batch loss only ever builds B×B blocks).

Neighbour-contrastive loss (Graph-MLP's `Ncontrast`), with S the cosine similarity of the embeddings
with its diagonal set to 0 and τ *multiplying* the similarity exactly as in the code:

    L_NC = -mean_i log( Σ_j exp(τ S_ij) T_ij / Σ_j exp(τ S_ij) )

Note that j = i stays in both sums (exp(τ·0) = 1, weighted by the self-loop mass T_ii in the
numerator), as in the code.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

LOG_EPS = 1e-8  # inside the log, as the official code


# ---- DEC self-training ----------------------------------------------------------------------------
def target_distribution(q: Tensor) -> Tensor:
    """DEC's sharpened target p_ij = (q_ij² / f_j) / Σ_j' (q_ij'² / f_j'), with f_j = Σ_i q_ij."""
    weight = q.pow(2) / q.sum(dim=0, keepdim=True)
    return weight / weight.sum(dim=1, keepdim=True)


def kl_loss(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) summed over clusters, averaged over nodes (`F.kl_div(q.log(), p, 'batchmean')`)."""
    return F.kl_div(q.log(), p, reduction="batchmean")


# ---- neighbour-contrastive loss ------------------------------------------------------------------
def cosine_similarity_matrix(z: Tensor) -> Tensor:
    """S [N, N]: cosine similarity between rows of z, diagonal set to 0 (as Graph-MLP)."""
    zn = F.normalize(z, dim=1)
    s = zn @ zn.T
    return s * (1.0 - torch.eye(s.shape[0], dtype=s.dtype, device=s.device))


def neighbour_contrastive_loss(z: Tensor, target: Tensor, tau: float) -> Tensor:
    """L_NC for embeddings z [N, n_z] and target [N, N] (dense, or sparse COO for the numerator)."""
    e = torch.exp(tau * cosine_similarity_matrix(z))
    if target.is_sparse:
        t = target.coalesce()
        row, col = t.indices()
        pos = torch.zeros(e.shape[0], dtype=e.dtype, device=e.device)
        pos = pos.index_add(0, row, e[row, col] * t.values().to(e.dtype))
    else:
        pos = (e * target.to(e.dtype)).sum(dim=1)
    return -torch.log(pos / e.sum(dim=1) + LOG_EPS).mean()


def minibatch_contrastive_loss(z_batch: Tensor, target: sp.spmatrix, idx, tau: float) -> Tensor:
    """L_NC on a node batch: embeddings of the nodes `idx` and only the sub-block target[idx][:, idx].

    Memory is O(B²). Each node's two sums then run over the batch instead of all nodes; for a batch
    drawn uniformly at random, the in-batch sums over j ≠ i are unbiased for (B-1)/(N-1) times the
    full sums, so the batched loss is a consistent (not unbiased: the log of a ratio) estimate of the
    full loss, equal to it when the batch is the whole graph.
    """
    return neighbour_contrastive_loss(z_batch, target_block(target, idx).to(z_batch.device), tau)


# ---- graph target --------------------------------------------------------------------------------
def normalized_adjacency(edge_index, num_nodes: int) -> sp.csr_matrix:
    """Â = D⁻¹(A + I): symmetrised, binarised, self-loops added, row-normalised (float64 CSR)."""
    ei = np.asarray(edge_index.cpu() if isinstance(edge_index, Tensor) else edge_index, dtype=np.int64)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must have shape [2, E], got {ei.shape}")
    if ei.size and (ei.min() < 0 or ei.max() >= num_nodes):
        raise ValueError(f"edge_index has node ids outside [0, {num_nodes})")
    a = sp.coo_matrix((np.ones(ei.shape[1]), (ei[0], ei[1])), shape=(num_nodes, num_nodes)).tocsr()
    a = a + a.T
    a = a - sp.diags(a.diagonal())  # existing self-loops are replaced by exactly one below
    a.eliminate_zeros()
    a.data[:] = 1.0
    a = a + sp.identity(num_nodes, format="csr")
    deg = np.asarray(a.sum(axis=1)).ravel()
    return (sp.diags(1.0 / deg) @ a).tocsr()


def adjacency_target(edge_index, num_nodes: int, order: int, influence: bool) -> sp.csr_matrix:
    """Contrastive target: Â^r (SCGC) or Â + Â² + ... + Â^r (SCGC*'s IAC), sparse float32 CSR."""
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    a = normalized_adjacency(edge_index, num_nodes)
    power, target = a, a
    for _ in range(order - 1):
        power = (power @ a).tocsr()
        target = target + power if influence else power
    target = target.astype(np.float32).tocsr()
    target.sort_indices()
    return target


def target_block(target: sp.spmatrix, idx) -> Tensor:
    """Dense float32 tensor target[idx][:, idx] ([B, B]) from a sparse target."""
    idx = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx, dtype=np.int64)
    block = target.tocsr()[idx][:, idx]
    return torch.from_numpy(np.asarray(block.toarray(), dtype=np.float32))


def to_torch_sparse(target: sp.spmatrix) -> Tensor:
    """A scipy sparse matrix as a coalesced torch sparse COO float32 tensor."""
    coo = target.tocoo()
    indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    values = torch.from_numpy(coo.data.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values, coo.shape, check_invariants=True).coalesce()

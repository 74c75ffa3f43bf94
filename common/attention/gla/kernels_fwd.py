"""Forward kernels of chunked GLA: the chunk-local cumsum of g, the sequential state pass `fwd_h` (unchanged
from the first kernels; as fast as fla's on the H200), the intra-chunk map A, then the outputs as matmuls only.

A [B*H, NT, C, C] float32 holds, per chunk, A[t, s] = scale * sum_k q_tk k_sk exp(b_tk - b_sk) for s <= t
(b = chunk-local cumsum of g), zeros above the diagonal and in rows past the sequence end: every entry is
written, so readers need no masks. Exponents stay <= 0: a query sub-chunk i (16 rows) meets keys of earlier
sub-chunks through the reference row r = i*S - 1 (the row before it), exp(b_t - b_r) * exp(b_r - b_s), as one
tensor-core product; its own 16 x 16 diagonal block is formed one key row at a time. Every decay is a difference
of the stored cumsum gcs (fp32), as fla does: in-kernel scans of g (exact, no cancellation) cost fwd_a and
bwd_intra 20-40% of their time on the H200 and were less accurate there (fp32 dg at strong gates missed
1e-4; with gcs it passes; benchmarks/README.md).
"""

from __future__ import annotations

import triton
import triton.language as tl

from common.attention.gla.kernels_common import (
    cast,
    chunk_coords,
    dot,
    dot_fine,
    load_row,
    load_rows,
    load_token_rows,
    state_tile,
    subchunk_coords,
)


@triton.jit
def cumsum_kernel(
    g,
    gcs,
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
):
    """gcs = cumsum of g within each chunk of C tokens (float32), stored once for the parallel kernels.

    Grid (cdiv(K, BK), NT, B * H).
    """
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = i_k * BK + tl.arange(0, BK)
    o_c = tl.arange(0, C)
    m_t, m_k = i_t * C + o_c < T, o_k < K
    off = (i_b * T + i_t * C).to(tl.int64) * H * K + i_h * K  # the chunk's first token
    b = tl.cumsum(load_rows(g + off, o_c, m_t, o_k, m_k, H * K).to(tl.float32), 0)
    tl.store(gcs + off + o_c[:, None] * (H * K) + o_k[None, :], b, mask=m_t[:, None] & m_k[None, :])


@triton.jit
def fwd_h_kernel(
    k,
    v,
    g,
    h0,
    h,
    ht,
    T,
    NT,
    h0_bstride,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_H0: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """State entering each chunk, h[:, :, c] (input dtype), and after the last one, ht (float32).

    Grid (cdiv(K, BK), cdiv(V, BV), B * H); state rows are independent per key channel, so K splits too.
    S <- diag(exp(b_C)) S + (k * exp(b_C - b))^T v per chunk.
    """
    i_b, i_h, i_bh, o_k, o_v, m_k, m_v, m_kv, p_kv = state_tile(H, K, V, BK, BV)
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        state += tl.load(h0 + i_b * h0_bstride + i_h * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
    p_h = h + i_bh.to(tl.int64) * NT * K * V + p_kv
    o_c = tl.arange(0, C)
    for i_t in range(NT):
        t = i_t * C + o_c
        m_t = t < T
        tok = (i_b * T + t).to(tl.int64) * H + i_h
        tl.store(p_h + i_t * K * V, cast(state, h.dtype.element_ty, PREC), mask=m_kv)
        b_k = load_token_rows(k, tok, m_t, o_k, m_k, K)
        b_g = load_token_rows(g, tok, m_t, o_k, m_k, K).to(tl.float32)
        b_v = load_token_rows(v, tok, m_t, o_v, m_v, V)
        b_last = tl.sum(b_g, 0)  # [BK], the gate over the whole chunk
        # b_C - b_t = sum of g after t, as a reverse cumsum (no cancellation between two large sums)
        kd = b_k * tl.exp(tl.cumsum(b_g, 0, reverse=True) - b_g)
        state = state * tl.exp(b_last)[:, None] + dot(tl.trans(kd), b_v, DT, PREC)
    tl.store(ht + i_bh.to(tl.int64) * K * V + p_kv, state, mask=m_kv)


@triton.jit
def fwd_a_kernel(
    q,
    k,
    gcs,
    A,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BK: tl.constexpr,
    PREC_FINE: tl.constexpr,
):
    """Rows i*S .. i*S+S-1 of one chunk's A outside the diagonal block: earlier keys as one tensor-core product,
    zeros after the block. Grid (C // S, NT, B * H); K in blocks of BK (a loop)."""
    i_i, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_s, s0, r_i, m_i = subchunk_coords(i_t, i_i, T, C, S)  # rows, first row, rows relative to tok0, mask
    a_off = tl.zeros([S, C], dtype=tl.float32)
    if (i_i > 0) & (s0 < T):  # earlier keys meet the sub-chunk's queries through the row r = i*S - 1
        m_before = m_c & (o_c < i_i * S)
        for i_kb in range(tl.cdiv(K, BK)):
            o_k = i_kb * BK + tl.arange(0, BK)
            m_k = o_k < K
            b_r = load_row(gcs, tok0, i_i * S - 1, o_k, m_k, H, K)
            q_r = load_rows(q + tok0 * K, r_i, m_i, o_k, m_k, H * K).to(tl.float32) * tl.exp(
                tl.where(m_i[:, None], load_rows(gcs + tok0 * K, r_i, m_i, o_k, m_k, H * K) - b_r[None, :], 0.0)
            )
            kd = load_rows(k + tok0 * K, o_c, m_before, o_k, m_k, H * K) * tl.exp(
                b_r[None, :] - load_rows(gcs + tok0 * K, o_c, m_before, o_k, m_k, H * K)
            )  # rows past r load 0: e^{b_r} <= 1 times k = 0
            a_off += dot_fine(q_r, tl.trans(kd), PREC_FINE)
    m_off = (o_c[None, :] < i_i * S) | (o_c[None, :] >= i_i * S + S)
    p_a = A + (i_bh.to(tl.int64) * NT + i_t) * C * C + (i_i * S + o_s)[:, None] * C
    tl.store(p_a + o_c[None, :], a_off * scale, mask=m_off & (o_s[:, None] >= 0))


@triton.jit
def fwd_a_diag_kernel(
    q,
    k,
    gcs,
    A,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BK: tl.constexpr,
):
    """The 16 x 16 diagonal block of sub-chunk i, one key row at a time (a small program, few warps: each step
    is a row reduction). Grid (C // S, NT, B * H); K in blocks of BK (a loop)."""
    i_i, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok0, _, _ = chunk_coords(i_t, i_bh, T, H, C)
    o_s, s0, r_i, m_i = subchunk_coords(i_t, i_i, T, C, S)  # rows, first row, rows relative to tok0, mask
    a_diag = tl.zeros([S, S], dtype=tl.float32)
    for i_kb in range(tl.cdiv(K, BK)):
        o_k = i_kb * BK + tl.arange(0, BK)
        m_k = o_k < K
        q_i = load_rows(q + tok0 * K, r_i, m_i, o_k, m_k, H * K).to(tl.float32)
        b_i = load_rows(gcs + tok0 * K, r_i, m_i, o_k, m_k, H * K)
        for j in range(S):
            m_j = m_k & (s0 + j < T)
            k_j = load_row(k, tok0, i_i * S + j, o_k, m_j, H, K).to(tl.float32)
            b_j = load_row(gcs, tok0, i_i * S + j, o_k, m_j, H, K)
            e = tl.exp(tl.where((o_s[:, None] >= j) & m_i[:, None], b_i - b_j[None, :], float("-inf")))
            col = tl.sum(q_i * k_j[None, :] * e, 1)  # [S]: A[rows of i, key j]
            a_diag += tl.where(o_s[None, :] == j, col[:, None], 0.0)
    p_a = A + (i_bh.to(tl.int64) * NT + i_t) * C * C + (i_i * S + o_s)[:, None] * C
    tl.store(p_a + i_i * S + o_s[None, :], a_diag * scale)


@triton.jit
def fwd_o_kernel(
    q,
    v,
    gcs,
    h,
    A,
    o,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """o = (scale q e^b) h_c + A v for one chunk and V block. Grid (cdiv(V, BV), NT, B * H)."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    p_h = h + (i_bh.to(tl.int64) * NT + i_t) * K * V
    acc = tl.zeros([C, BV], dtype=tl.float32)
    for i_kb in range(tl.cdiv(K, BK)):
        o_k = i_kb * BK + tl.arange(0, BK)
        m_k = o_k < K
        q_c = load_rows(q + tok0 * K, o_c, m_c, o_k, m_k, H * K).to(tl.float32) * scale
        b_c = load_rows(gcs + tok0 * K, o_c, m_c, o_k, m_k, H * K)
        b_h = tl.load(p_h + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
        acc += dot(q_c * tl.exp(b_c), b_h, DT, PREC)
    b_a = tl.load(A + (i_bh.to(tl.int64) * NT + i_t) * C * C + o_c[:, None] * C + o_c[None, :])
    acc += dot(b_a, load_rows(v + tok0 * V, o_c, m_c, o_v, m_v, H * V), DT, PREC)
    tl.store(
        o + tok0 * V + o_c[:, None] * (H * V) + o_v[None, :],
        cast(acc, o.dtype.element_ty, PREC),
        mask=m_c[:, None] & m_v[None, :],
    )

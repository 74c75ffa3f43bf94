"""Forward parallel kernels of chunked GLA: the intra-chunk map A, then the outputs as matmuls only.

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

from common.attention.gla.triton_state import _chunk, _dot, _dot_fine, _row, _rows, _subchunk, _to


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
    tok0, o_c, m_c = _chunk(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_s, s0, r_i, m_i = _subchunk(i_t, i_i, T, C, S)  # rows, first row, rows relative to tok0, mask
    a_off = tl.zeros([S, C], dtype=tl.float32)
    if (i_i > 0) & (s0 < T):  # earlier keys meet the sub-chunk's queries through the row r = i*S - 1
        m_before = m_c & (o_c < i_i * S)
        for i_kb in range(tl.cdiv(K, BK)):
            o_k = i_kb * BK + tl.arange(0, BK)
            m_k = o_k < K
            b_r = _row(gcs, tok0, i_i * S - 1, o_k, m_k, H, K)
            q_r = _rows(q + tok0 * K, r_i, m_i, o_k, m_k, H * K).to(tl.float32) * tl.exp(
                tl.where(m_i[:, None], _rows(gcs + tok0 * K, r_i, m_i, o_k, m_k, H * K) - b_r[None, :], 0.0)
            )
            kd = _rows(k + tok0 * K, o_c, m_before, o_k, m_k, H * K) * tl.exp(
                b_r[None, :] - _rows(gcs + tok0 * K, o_c, m_before, o_k, m_k, H * K)
            )  # rows past r load 0: e^{b_r} <= 1 times k = 0
            a_off += _dot_fine(q_r, tl.trans(kd), PREC_FINE)
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
    tok0, _, _ = _chunk(i_t, i_bh, T, H, C)
    o_s, s0, r_i, m_i = _subchunk(i_t, i_i, T, C, S)  # rows, first row, rows relative to tok0, mask
    a_diag = tl.zeros([S, S], dtype=tl.float32)
    for i_kb in range(tl.cdiv(K, BK)):
        o_k = i_kb * BK + tl.arange(0, BK)
        m_k = o_k < K
        q_i = _rows(q + tok0 * K, r_i, m_i, o_k, m_k, H * K).to(tl.float32)
        b_i = _rows(gcs + tok0 * K, r_i, m_i, o_k, m_k, H * K)
        for j in range(S):
            m_j = m_k & (s0 + j < T)
            k_j = _row(k, tok0, i_i * S + j, o_k, m_j, H, K).to(tl.float32)
            b_j = _row(gcs, tok0, i_i * S + j, o_k, m_j, H, K)
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
    tok0, o_c, m_c = _chunk(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    p_h = h + (i_bh.to(tl.int64) * NT + i_t) * K * V
    acc = tl.zeros([C, BV], dtype=tl.float32)
    for i_kb in range(tl.cdiv(K, BK)):
        o_k = i_kb * BK + tl.arange(0, BK)
        m_k = o_k < K
        q_c = _rows(q + tok0 * K, o_c, m_c, o_k, m_k, H * K).to(tl.float32) * scale
        b_c = _rows(gcs + tok0 * K, o_c, m_c, o_k, m_k, H * K)
        b_h = tl.load(p_h + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
        acc += _dot(q_c * tl.exp(b_c), b_h, DT, PREC)
    b_a = tl.load(A + (i_bh.to(tl.int64) * NT + i_t) * C * C + o_c[:, None] * C + o_c[None, :])
    acc += _dot(b_a, _rows(v + tok0 * V, o_c, m_c, o_v, m_v, H * V), DT, PREC)
    tl.store(
        o + tok0 * V + o_c[:, None] * (H * V) + o_v[None, :],
        _to(acc, o.dtype.element_ty, PREC),
        mask=m_c[:, None] & m_v[None, :],
    )

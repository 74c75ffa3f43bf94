"""Backward kernels of chunked GLA: the sequential state pass `bwd_dh`, then dA once, then dv, dq/dk (intra) and
dq/dk/dg (inter) from it.

dA [B*H, NT, C, C] float32 = scale * (do v^T), lower-triangular per chunk (zeros elsewhere, every entry
written). With A[t, s] = scale q_t . (k_s e^{b_t - b_s}) (s <= t, b = chunk-local cumsum of g):
    dv_s = sum_t A[t, s] do_t + (k_s e^{b_C - b_s}) dh_c                       (bwd_dv)
    dq_t = sum_s dA[t, s] k_s e^{b_t - b_s} + scale e^{b_t} do_t h_c^T           (bwd_intra + bwd_inter)
    dk_s = sum_t dA[t, s] q_t e^{b_t - b_s} + e^{b_C - b_s} v_s dh_c^T
    dg_t = sum_{u >= t in chunk} (q_u dq_u - k_u dk_u) + e^{b_C} sum_v h_c dh_c + sum_s k_s dk^inter_s
h_c is the state entering chunk c, dh_c the gradient of the state after it: the last two terms are dL/db_C
(the chunk's total decay), so dg needs nothing from other chunks. Exponents stay <= 0 as in the forward
(sub-chunk reference rows, diagonal blocks row by row, differences of the stored cumsum gcs).
"""

from __future__ import annotations

import triton
import triton.language as tl

from common.attention.gla.kernels_common import (
    cast,
    chunk_coords,
    chunk_total,
    dot,
    dot_fine,
    load_row,
    load_rows,
    load_token_rows,
    state_tile,
    subchunk_coords,
)


@triton.jit
def bwd_dh_kernel(
    q,
    g,
    do,
    dht,
    dh,
    dh0,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    HAS_DHT: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """dh[:, :, c] = dL/d(state after chunk c) (input dtype), dh0 = dL/d(initial state) (float32).

    Grid (cdiv(K, BK), cdiv(V, BV), B * H). In reverse: D <- diag(exp(b_C)) D + (scale q e^{b})^T do.
    """
    i_b, i_h, i_bh, o_k, o_v, m_k, m_v, m_kv, p_kv = state_tile(H, K, V, BK, BV)
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_DHT:
        state += tl.load(dht + i_bh.to(tl.int64) * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
    p_dh = dh + i_bh.to(tl.int64) * NT * K * V + p_kv
    o_c = tl.arange(0, C)
    for i_rev in range(NT):
        i_t = NT - 1 - i_rev
        t = i_t * C + o_c
        m_t = t < T
        tok = (i_b * T + t).to(tl.int64) * H + i_h
        tl.store(p_dh + i_t * K * V, cast(state, dh.dtype.element_ty, PREC), mask=m_kv)
        b_q = load_token_rows(q, tok, m_t, o_k, m_k, K).to(tl.float32) * scale
        b_g = load_token_rows(g, tok, m_t, o_k, m_k, K).to(tl.float32)
        b_do = load_token_rows(do, tok, m_t, o_v, m_v, V)
        b = tl.cumsum(b_g, 0)
        state = state * tl.exp(tl.sum(b_g, 0))[:, None] + dot(tl.trans(b_q * tl.exp(b)), b_do, DT, PREC)
    tl.store(dh0 + i_bh.to(tl.int64) * K * V + p_kv, state, mask=m_kv)


@triton.jit
def bwd_da_kernel(
    v,
    do,
    dA,
    scale,
    T,
    NT,
    H: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    BV: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """dA of one chunk (V in blocks of BV, a loop). Grid (NT, B * H)."""
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    acc = tl.zeros([C, C], dtype=tl.float32)
    for i_vb in range(tl.cdiv(V, BV)):
        o_v = i_vb * BV + tl.arange(0, BV)
        m_v = o_v < V
        acc += dot(
            load_rows(do + tok0 * V, o_c, m_c, o_v, m_v, H * V),
            tl.trans(load_rows(v + tok0 * V, o_c, m_c, o_v, m_v, H * V)),
            DT,
            PREC,
        )
    acc = tl.where(o_c[:, None] >= o_c[None, :], acc * scale, 0.0)
    tl.store(dA + (i_bh.to(tl.int64) * NT + i_t) * C * C + o_c[:, None] * C + o_c[None, :], acc)


@triton.jit
def bwd_dv_kernel(
    k,
    gcs,
    do,
    dh,
    A,
    dv,
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
    PREC_FINE: tl.constexpr,
):
    """dv = A^T do + (k e^{b_C - b}) dh_c for one chunk and V block. Grid (cdiv(V, BV), NT, B * H)."""
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    a_t = tl.load(A + (i_bh.to(tl.int64) * NT + i_t) * C * C + o_c[None, :] * C + o_c[:, None])  # [s, t]
    acc = dot_fine(a_t, load_rows(do + tok0 * V, o_c, m_c, o_v, m_v, H * V), PREC_FINE)
    p_dh = dh + (i_bh.to(tl.int64) * NT + i_t) * K * V
    for i_kb in range(tl.cdiv(K, BK)):
        o_k = i_kb * BK + tl.arange(0, BK)
        m_k = o_k < K
        b_last = chunk_total(gcs, tok0, i_t, T, o_k, m_k, H, K, C)
        kd = load_rows(k + tok0 * K, o_c, m_c, o_k, m_k, H * K) * tl.exp(
            b_last[None, :] - load_rows(gcs + tok0 * K, o_c, m_c, o_k, m_k, H * K)
        )  # rows past the end load 0: e^{b_C} <= 1 times k = 0
        b_dh = tl.load(p_dh + o_k[:, None] * V + o_v[None, :], mask=m_k[:, None] & m_v[None, :], other=0.0)
        acc += dot(kd, b_dh, DT, PREC)
    tl.store(
        dv + tok0 * V + o_c[:, None] * (H * V) + o_v[None, :],
        cast(acc, dv.dtype.element_ty, PREC),
        mask=m_c[:, None] & m_v[None, :],
    )


@triton.jit
def bwd_intra_kernel(
    q,
    k,
    gcs,
    dA,
    dq,
    dk,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    NC: tl.constexpr,
    BK: tl.constexpr,
    PREC_FINE: tl.constexpr,
):
    """Intra-chunk dq, dk (float32) of one sub-chunk and K block. Grid (cdiv(K, BK) * NC, NT, B * H), NC = C // S.

    Earlier keys meet the sub-chunk's queries through its reference row r (the row before it); later
    queries meet its keys through its last row e; the 16 x 16 diagonal block is formed row by row.
    """
    i_ki, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_kb, i_i = i_ki // NC, i_ki % NC
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_s, s0, r_i, m_i = subchunk_coords(i_t, i_i, T, C, S)  # rows, first row, rows relative to tok0, mask
    o_k = i_kb * BK + tl.arange(0, BK)
    m_k = o_k < K
    p_da = dA + (i_bh.to(tl.int64) * NT + i_t) * C * C
    b_i = load_rows(gcs + tok0 * K, r_i, m_i, o_k, m_k, H * K)
    dq_i = tl.zeros([S, BK], dtype=tl.float32)
    dk_i = tl.zeros([S, BK], dtype=tl.float32)
    if (i_i > 0) & (s0 < T):  # keys of earlier sub-chunks, through the reference row r = i*S - 1
        m_before = m_c & (o_c < i_i * S)
        b_r = load_row(gcs, tok0, i_i * S - 1, o_k, m_k, H, K)
        kd = load_rows(k + tok0 * K, o_c, m_before, o_k, m_k, H * K) * tl.exp(
            b_r[None, :] - load_rows(gcs + tok0 * K, o_c, m_before, o_k, m_k, H * K)
        )  # e^{b_r - b_s}; rows past r load 0: e^{b_r} <= 1 times k = 0
        da = tl.load(p_da + (i_i * S + o_s)[:, None] * C + o_c[None, :])  # [S, C]: dA[rows of i, all keys]
        dq_i += dot_fine(da, kd, PREC_FINE) * tl.exp(tl.where(m_i[:, None], b_i - b_r[None, :], 0.0))
    if (i_i < NC - 1) & (s0 + S < T):  # queries of later sub-chunks, through the last row e = i*S + S - 1
        m_after = m_c & (o_c >= i_i * S + S)
        b_e = load_row(gcs, tok0, i_i * S + S - 1, o_k, m_k, H, K)
        e_a = tl.where(m_after[:, None], load_rows(gcs + tok0 * K, o_c, m_after, o_k, m_k, H * K) - b_e[None, :], 0.0)
        qd = load_rows(q + tok0 * K, o_c, m_after, o_k, m_k, H * K) * tl.exp(e_a)  # e^{b_t - b_e}
        dat = tl.load(p_da + o_c[None, :] * C + (i_i * S + o_s)[:, None])  # [S, C]: dA[all queries, keys of i]^T
        dk_i += dot_fine(dat, qd, PREC_FINE) * tl.exp(b_e[None, :] - b_i)  # e^{b_e - b_s}
    for j in range(S):  # diagonal block: step j is key j (for dq) and query j (for dk)
        ok_j = s0 + j < T
        m_j = m_k & ok_j
        k_j = load_row(k, tok0, i_i * S + j, o_k, m_j, H, K).to(tl.float32)
        q_j = load_row(q, tok0, i_i * S + j, o_k, m_j, H, K).to(tl.float32)
        b_j = load_row(gcs, tok0, i_i * S + j, o_k, m_j, H, K)
        da_col = tl.load(p_da + (i_i * S + o_s) * C + i_i * S + j)  # dA[rows of i, key j]
        da_row = tl.load(p_da + (i_i * S + j) * C + i_i * S + o_s)  # dA[query j, keys of i]
        e_q = tl.exp(tl.where((o_s[:, None] >= j) & m_i[:, None], b_i - b_j[None, :], float("-inf")))
        e_k = tl.exp(tl.where((o_s[:, None] <= j) & ok_j, b_j[None, :] - b_i, float("-inf")))
        dq_i += da_col[:, None] * k_j[None, :] * e_q
        dk_i += da_row[:, None] * q_j[None, :] * e_k
    m_out = m_i[:, None] & m_k[None, :]
    tl.store(dq + tok0 * K + r_i[:, None] * (H * K) + o_k[None, :], dq_i, mask=m_out)
    tl.store(dk + tok0 * K + r_i[:, None] * (H * K) + o_k[None, :], dk_i, mask=m_out)


@triton.jit
def bwd_inter_kernel(
    q,
    k,
    v,
    gcs,
    h,
    do,
    dh,
    dq_intra,
    dk_intra,
    dq,
    dk,
    dg,
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
    """dq, dk (intra + state terms) and dg of one chunk and K block. Grid (cdiv(K, BK), NT, B * H)."""
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    tok0, o_c, m_c = chunk_coords(i_t, i_bh, T, H, C)  # the chunk's first token, its rows, in-sequence mask
    o_k = i_k * BK + tl.arange(0, BK)
    m_k = o_k < K
    p_kv = (i_bh.to(tl.int64) * NT + i_t) * K * V
    b_dq = tl.zeros([C, BK], dtype=tl.float32)
    b_dk = tl.zeros([C, BK], dtype=tl.float32)
    d_last = tl.zeros([BK], dtype=tl.float32)  # sum_v h_c dh_c, per key channel
    for i_vb in range(tl.cdiv(V, BV)):
        o_v = i_vb * BV + tl.arange(0, BV)
        m_v = o_v < V
        m_vk = m_v[:, None] & m_k[None, :]
        p_vk = o_k[None, :] * V + o_v[:, None]  # [BV, BK] views of the [K, V] states
        b_h = tl.load(h + p_kv + p_vk, mask=m_vk, other=0.0)
        b_dh = tl.load(dh + p_kv + p_vk, mask=m_vk, other=0.0)
        d_last += tl.sum(b_h.to(tl.float32) * b_dh.to(tl.float32), 0)
        b_dq += dot(load_rows(do + tok0 * V, o_c, m_c, o_v, m_v, H * V), b_h, DT, PREC)
        b_dk += dot(load_rows(v + tok0 * V, o_c, m_c, o_v, m_v, H * V), b_dh, DT, PREC)
    b_c = load_rows(gcs + tok0 * K, o_c, m_c, o_k, m_k, H * K)
    b_last = chunk_total(gcs, tok0, i_t, T, o_k, m_k, H, K, C)
    b_q = load_rows(q + tok0 * K, o_c, m_c, o_k, m_k, H * K).to(tl.float32)
    b_k = load_rows(k + tok0 * K, o_c, m_c, o_k, m_k, H * K).to(tl.float32)
    m_out = m_c[:, None] & m_k[None, :]
    p_out = o_c[:, None] * (H * K) + o_k[None, :]  # relative to tok0
    b_dq = b_dq * (scale * tl.exp(b_c)) + tl.load(dq_intra + tok0 * K + p_out, mask=m_out, other=0.0)
    b_dk = b_dk * tl.exp(b_last[None, :] - b_c)  # e^{b_C - b_s}; rows past the end: e^{b_C} times 0
    d_last = d_last * tl.exp(b_last) + tl.sum(b_dk * b_k, 0)
    b_dk += tl.load(dk_intra + tok0 * K + p_out, mask=m_out, other=0.0)
    d_g = tl.cumsum(b_q * b_dq - b_k * b_dk, 0, reverse=True) + d_last[None, :]
    tl.store(dq + tok0 * K + p_out, cast(b_dq, dq.dtype.element_ty, PREC), mask=m_out)
    tl.store(dk + tok0 * K + p_out, cast(b_dk, dk.dtype.element_ty, PREC), mask=m_out)
    tl.store(dg + tok0 * K + p_out, cast(d_g, dg.dtype.element_ty, PREC), mask=m_out)

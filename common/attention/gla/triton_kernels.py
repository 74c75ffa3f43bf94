"""Triton kernels of chunked GLA (imported only by `common.attention.gla.triton`, which imports triton).

Layout: q, k, g, dq, dk, dg: [B, T, H, K]; v, o, do, dv: [B, T, H, V]; per-chunk states h, dh:
[B, H, NT, K, V] (input dtype); h0, ht, dh0, dht: [B, H, K, V] float32. Chunks of C = 64 tokens,
split into sub-chunks of S = 16. Within a chunk b = cumsum(g) (float32, recomputed, never stored).
Every exponent is <= 0: cross-sub-chunk decays exp(b_t - b_s) are split at a sub-chunk boundary r with
s <= r <= t, as exp(b_t - b_r) * exp(b_r - b_s); the diagonal 16 x 16 blocks are formed elementwise
with the exact exp(b_t - b_s), one key (or query) row at a time.

Kernels: forward `fwd_h` (states, sequential over chunks), `fwd_o` (outputs, parallel over chunks);
backward `bwd_dh` (state gradients, sequential in reverse), `bwd_dqk` (dq, dk and dg, parallel) and
`bwd_dv` (dv, and the cross-chunk suffix of dg, parallel). Dot operands are rounded to `DT`, the input
dtype (see `_dot` for the CPU interpreter).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, DT: tl.constexpr, PREC: tl.constexpr):
    """a @ b with both operands rounded to DT, float32 accumulation (PREC: "tf32" for bf16/fp16, "tf32x3"
    for fp32). PREC "emulate" (the CPU interpreter, whose bf16 tl.dot is wrong) rounds the operands to DT
    and multiplies them in float32: the same numbers as a tensor-core MMA."""
    if PREC == "emulate":
        return tl.dot(a.to(DT).to(tl.float32), b.to(DT).to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(DT), b.to(DT), input_precision=PREC)


@triton.jit
def _rows(ptr, tok, m_tok, col, m_col, stride: tl.constexpr):
    """Load rows `tok` (token offsets (b*T + t)*H + h, [R]) and columns `col` ([N]) -> [R, N], 0 outside."""
    return tl.load(ptr + tok[:, None] * stride + col[None, :], mask=m_tok[:, None] & m_col[None, :], other=0.0)


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
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
    state = tl.zeros([BK, BV], dtype=tl.float32)
    if HAS_H0:
        state += tl.load(h0 + i_b * h0_bstride + i_h * K * V + p_kv, mask=m_kv, other=0.0).to(tl.float32)
    p_h = h + i_bh.to(tl.int64) * NT * K * V + p_kv
    o_c = tl.arange(0, C)
    for i_t in range(NT):
        t = i_t * C + o_c
        m_t = t < T
        tok = (i_b * T + t).to(tl.int64) * H + i_h
        tl.store(p_h + i_t * K * V, state.to(h.dtype.element_ty), mask=m_kv)
        b_k = _rows(k, tok, m_t, o_k, m_k, K)
        b_g = _rows(g, tok, m_t, o_k, m_k, K).to(tl.float32)
        b_v = _rows(v, tok, m_t, o_v, m_v, V)
        b_last = tl.sum(b_g, 0)  # [BK], the gate over the whole chunk
        # b_C - b_t = sum of g after t, as a reverse cumsum (no cancellation between two large sums)
        kd = b_k * tl.exp(tl.cumsum(b_g, 0, reverse=True) - b_g)
        state = state * tl.exp(b_last)[:, None] + _dot(tl.trans(kd), b_v, DT, PREC)
    tl.store(ht + i_bh.to(tl.int64) * K * V + p_kv, state, mask=m_kv)


@triton.jit
def fwd_o_kernel(
    q,
    k,
    v,
    g,
    h,
    o,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """o of one chunk and V block. Grid (cdiv(V, BV), NT, B * H); BK >= K (whole key dim).

    Per query sub-chunk i (rows [16], reference r = last row before it, b_r):
    o_i = (q_i e^{b_i}) h_c + [(q_i e^{b_i - b_r}) (k_<r e^{b_r - b})^T] v + D_i v_i, D_i exact diagonal.
    """
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    o_c, o_s = tl.arange(0, C), tl.arange(0, S)
    m_k, m_v = o_k < K, o_v < V
    t0 = i_t * C
    tok_c = (i_b * T + t0 + o_c).to(tl.int64) * H + i_h
    m_c = t0 + o_c < T
    b_k = _rows(k, tok_c, m_c, o_k, m_k, K)
    b = tl.cumsum(_rows(g, tok_c, m_c, o_k, m_k, K).to(tl.float32), 0)  # [C, BK]
    b_v = _rows(v, tok_c, m_c, o_v, m_v, V)
    b_h = tl.load(
        h + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_k[:, None] * V + o_v[None, :],
        mask=m_k[:, None] & m_v[None, :],
        other=0.0,
    )
    for i in tl.static_range(C // S):
        if t0 + i * S < T:  # sub-chunks past the end of the sequence do nothing
            tok = (i_b * T + t0 + i * S + o_s).to(tl.int64) * H + i_h
            m_s = t0 + i * S + o_s < T
            q_i = _rows(q, tok, m_s, o_k, m_k, K).to(tl.float32) * scale
            # b_r: b at the row before this sub-chunk (0 for the first); b_l: cumsum from the sub-chunk start
            # (local sums keep the diagonal's exponents b_t - b_s free of cancellation against large |b|)
            b_r = tl.sum(tl.where(o_c[:, None] == i * S - 1, b, 0.0), 0)
            b_l = tl.cumsum(_rows(g, tok, m_s, o_k, m_k, K).to(tl.float32), 0)
            acc = _dot(q_i * tl.exp(b_r[None, :] + b_l), b_h, DT, PREC)  # [S, BV]
            if i > 0:
                kd = tl.where(o_c[:, None] < i * S, b_k * tl.exp(tl.minimum(b_r[None, :] - b, 0.0)), 0.0)
                a = _dot(q_i * tl.exp(b_l), tl.trans(kd), DT, PREC)  # [S, C]
                acc += _dot(a, b_v, DT, PREC)
            # diagonal block, exact: column j = key row i*S + j
            a_d = tl.zeros([S, S], dtype=tl.float32)
            b_run = tl.zeros([BK], dtype=tl.float32)
            for j in range(S):
                tok_j = (i_b * T + t0 + i * S + j).to(tl.int64) * H + i_h
                ok_j = t0 + i * S + j < T
                k_j = tl.load(k + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32)
                b_run += tl.load(g + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32)
                e = tl.exp(tl.where(o_s[:, None] >= j, b_l - b_run[None, :], float("-inf")))
                col = tl.sum(q_i * k_j[None, :] * e, 1)  # [S]
                a_d = tl.where(o_s[None, :] == j, col[:, None], a_d)
            acc += _dot(a_d, _rows(v, tok, m_s, o_v, m_v, V), DT, PREC)
            tl.store(o + tok[:, None] * V + o_v[None, :], acc.to(o.dtype.element_ty), mask=m_s[:, None] & m_v[None, :])


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
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_kv = o_k[:, None] * V + o_v[None, :]
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
        tl.store(p_dh + i_t * K * V, state.to(dh.dtype.element_ty), mask=m_kv)
        b_q = _rows(q, tok, m_t, o_k, m_k, K).to(tl.float32) * scale
        b_g = _rows(g, tok, m_t, o_k, m_k, K).to(tl.float32)
        b_do = _rows(do, tok, m_t, o_v, m_v, V)
        b = tl.cumsum(b_g, 0)
        state = state * tl.exp(tl.sum(b_g, 0))[:, None] + _dot(tl.trans(b_q * tl.exp(b)), b_do, DT, PREC)
    tl.store(dh0 + i_bh.to(tl.int64) * K * V + p_kv, state, mask=m_kv)


@triton.jit
def bwd_dqk_kernel(
    q,
    k,
    v,
    g,
    h,
    do,
    dh,
    dq,
    dk,
    dg_loc,
    dg_tot,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """dq, dk and the in-chunk part of dg of one chunk and K block. Grid (cdiv(K, BK), NT, B * H).

    Every term is per key channel once dA (a reduction over V, in blocks of BV) is formed, so K splits
    freely (dA is recomputed per K block; it bounds registers at K = 256).

    dA[t, s] = do_t . v_s; dq_t = sum_{s<=t} dA e^{b_t-b_s} k_s + e^{b_t} do_t h_c^T;
    dk_s = sum_{t>=s} dA e^{b_t-b_s} q_t + e^{b_C-b_s} v_s dh_c^T (q scaled; dq returned * scale).
    dL/dG_t = q_t dq_t - k_t dk_t; dg = its reverse cumsum over the sequence: here the in-chunk part
    (sub-chunks in reverse order) into dg_loc [B, T, H, K] float32 (it nearly cancels against the
    suffix, so it is not rounded before that is added), and the chunk's total in dg_tot [B*H, NT, K]
    (float32) for the cross-chunk suffix, which `bwd_dv_kernel` adds.
    """
    i_k, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = i_k * BK + tl.arange(0, BK)
    o_c, o_s = tl.arange(0, C), tl.arange(0, S)
    m_k = o_k < K
    t0 = i_t * C
    tok_c = (i_b * T + t0 + o_c).to(tl.int64) * H + i_h
    m_c = t0 + o_c < T
    b_k = _rows(k, tok_c, m_c, o_k, m_k, K)
    b_q = _rows(q, tok_c, m_c, o_k, m_k, K)  # input dtype, unscaled: fewer registers
    b = tl.cumsum(_rows(g, tok_c, m_c, o_k, m_k, K).to(tl.float32), 0)
    p_h = h + (i_bh.to(tl.int64) * NT + i_t) * K * V
    p_dh = dh + (i_bh.to(tl.int64) * NT + i_t) * K * V
    carry = tl.zeros([BK], dtype=tl.float32)  # sum of dL/dG over the later rows of the chunk
    b_after = tl.zeros([BK], dtype=tl.float32)  # b_C - b_r: sum of g from the sub-chunk on (exact)
    for i_rev in tl.static_range(C // S):
        i = C // S - 1 - i_rev
        if t0 + i * S < T:  # sub-chunks past the end of the sequence do nothing
            tok = (i_b * T + t0 + i * S + o_s).to(tl.int64) * H + i_h
            m_s = t0 + i * S + o_s < T
            q_i = _rows(q, tok, m_s, o_k, m_k, K).to(tl.float32) * scale
            k_i = _rows(k, tok, m_s, o_k, m_k, K).to(tl.float32)
            b_r = tl.sum(tl.where(o_c[:, None] == i * S - 1, b, 0.0), 0)  # b before the sub-chunk
            b_l = tl.cumsum(_rows(g, tok, m_s, o_k, m_k, K).to(tl.float32), 0)  # local cumsum
            b_e = tl.sum(tl.where(o_c[:, None] == i * S + S - 1, b, 0.0), 0)  # b at its last row
            # reductions over V: dA rows (queries i) and columns (keys i), and the state terms
            da = tl.zeros([S, C], dtype=tl.float32)  # da[t, s] = do_t . v_s, t in sub-chunk i
            dat = tl.zeros([S, C], dtype=tl.float32)  # dat[s, t] = v_s . do_t, s in sub-chunk i
            dq_i = tl.zeros([S, BK], dtype=tl.float32)
            dk_i = tl.zeros([S, BK], dtype=tl.float32)
            for i_v in range(tl.cdiv(V, BV)):
                o_v = i_v * BV + tl.arange(0, BV)
                m_v = o_v < V
                m_kv = m_k[:, None] & m_v[None, :]
                p_kv = o_k[:, None] * V + o_v[None, :]
                do_i = _rows(do, tok, m_s, o_v, m_v, V)
                v_i = _rows(v, tok, m_s, o_v, m_v, V)
                da += _dot(do_i, tl.trans(_rows(v, tok_c, m_c, o_v, m_v, V)), DT, PREC)
                dat += _dot(v_i, tl.trans(_rows(do, tok_c, m_c, o_v, m_v, V)), DT, PREC)
                dq_i += _dot(do_i, tl.trans(tl.load(p_h + p_kv, mask=m_kv, other=0.0)), DT, PREC)
                dk_i += _dot(v_i, tl.trans(tl.load(p_dh + p_kv, mask=m_kv, other=0.0)), DT, PREC)
            dq_i = dq_i * tl.exp(b_r[None, :] + b_l)
            b_el = tl.sum(tl.where(o_s[:, None] == S - 1, b_l, 0.0), 0)  # b_e - b_r
            b_after += b_el
            dk_i = dk_i * tl.exp(b_after[None, :] - b_l)
            if i > 0:  # keys in earlier sub-chunks, split at b_r
                kd = tl.where(o_c[:, None] < i * S, b_k * tl.exp(tl.minimum(b_r[None, :] - b, 0.0)), 0.0)
                da_m = tl.where(o_c[None, :] < i * S, da, 0.0)
                dq_i += _dot(da_m, kd, DT, PREC) * tl.exp(b_l)
            if i < C // S - 1:  # queries in later sub-chunks, split at b_e
                m_late = o_c[:, None] >= i * S + S
                qd = tl.where(m_late, b_q * (scale * tl.exp(tl.minimum(b - b_e[None, :], 0.0))), 0.0)
                dat_m = tl.where(o_c[None, :] >= i * S + S, dat, 0.0)
                dk_i += _dot(dat_m, qd, DT, PREC) * tl.exp(b_el[None, :] - b_l)
            # diagonal block, exact: step j is key j (for dq) and query j (for dk) of the sub-chunk
            b_run = tl.zeros([BK], dtype=tl.float32)
            for j in range(S):
                tok_j = (i_b * T + t0 + i * S + j).to(tl.int64) * H + i_h
                ok_j = t0 + i * S + j < T
                k_j = tl.load(k + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32)
                q_j = tl.load(q + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32) * scale
                b_run += tl.load(g + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32)
                da_j = tl.sum(tl.where(o_c[None, :] == i * S + j, da, 0.0), 1)  # dA[rows of i, key j]
                dat_j = tl.sum(tl.where(o_c[None, :] == i * S + j, dat, 0.0), 1)  # dA[query j, rows of i]
                e_q = tl.exp(tl.where(o_s[:, None] >= j, b_l - b_run[None, :], float("-inf")))
                e_k = tl.exp(tl.where(o_s[:, None] <= j, b_run[None, :] - b_l, float("-inf")))
                dq_i += da_j[:, None] * k_j[None, :] * e_q
                dk_i += dat_j[:, None] * q_j[None, :] * e_k
            m_out = m_s[:, None] & m_k[None, :]
            tl.store(dq + tok[:, None] * K + o_k[None, :], (dq_i * scale).to(dq.dtype.element_ty), mask=m_out)
            tl.store(dk + tok[:, None] * K + o_k[None, :], dk_i.to(dk.dtype.element_ty), mask=m_out)
            # dL/dG = q dq - k dk (q scaled, dq w.r.t. scaled q); reverse cumsum within the chunk
            d_g = q_i * dq_i - k_i * dk_i
            tot_i = tl.sum(d_g, 0)
            d_g = carry[None, :] + tot_i[None, :] - tl.cumsum(d_g, 0) + d_g
            carry += tot_i
            tl.store(dg_loc + tok[:, None] * K + o_k[None, :], d_g, mask=m_out)
    tl.store(dg_tot + (i_bh.to(tl.int64) * NT + i_t) * K + o_k, carry, mask=m_k)


@triton.jit
def bwd_dv_kernel(
    q,
    k,
    g,
    do,
    dh,
    dv,
    dg_loc,
    dg,
    dg_suffix,
    scale,
    T,
    NT,
    H: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    C: tl.constexpr,
    S: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    DT: tl.constexpr,
    PREC: tl.constexpr,
):
    """dv of one chunk and V block; the V-block-0 programs also add the cross-chunk suffix to dg.

    Grid (cdiv(V, BV), NT, B * H); BK >= K. dv_s = sum_{t>=s} A[t, s] do_t + (k_s e^{b_C - b_s}) dh_c,
    A[t, s] = (q_t e^{b_t - b_s}) . k_s, per key sub-chunk i: later queries split at b_e (its last row),
    the diagonal block exact. dg = dg_loc (float32, may alias dg) + dg_suffix [B*H, NT, K] (float32:
    dL/dg at the next chunk's first token).
    """
    i_v, i_t, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    o_k = tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    o_c, o_s = tl.arange(0, C), tl.arange(0, S)
    m_k, m_v = o_k < K, o_v < V
    t0 = i_t * C
    tok_c = (i_b * T + t0 + o_c).to(tl.int64) * H + i_h
    m_c = t0 + o_c < T
    b_q = _rows(q, tok_c, m_c, o_k, m_k, K)  # input dtype, unscaled: fewer registers
    b = tl.cumsum(_rows(g, tok_c, m_c, o_k, m_k, K).to(tl.float32), 0)
    b_do = _rows(do, tok_c, m_c, o_v, m_v, V)
    b_dh = tl.load(
        dh + (i_bh.to(tl.int64) * NT + i_t) * K * V + o_k[:, None] * V + o_v[None, :],
        mask=m_k[:, None] & m_v[None, :],
        other=0.0,
    )
    suffix = tl.load(dg_suffix + (i_bh.to(tl.int64) * NT + i_t) * K + o_k, mask=m_k, other=0.0)
    b_after = tl.zeros([BK], dtype=tl.float32)  # b_C - b_r: sum of g from the sub-chunk on (exact)
    for i_rev in tl.static_range(C // S):  # reverse order, for the running b_after
        i = C // S - 1 - i_rev
        if t0 + i * S < T:  # sub-chunks past the end of the sequence do nothing
            tok = (i_b * T + t0 + i * S + o_s).to(tl.int64) * H + i_h
            m_s = t0 + i * S + o_s < T
            k_i = _rows(k, tok, m_s, o_k, m_k, K).to(tl.float32)
            b_l = tl.cumsum(_rows(g, tok, m_s, o_k, m_k, K).to(tl.float32), 0)
            b_el = tl.sum(tl.where(o_s[:, None] == S - 1, b_l, 0.0), 0)  # b_e - b_r
            b_after += b_el
            acc = _dot(k_i * tl.exp(b_after[None, :] - b_l), b_dh, DT, PREC)  # [S, BV]
            if i < C // S - 1:
                b_e = tl.sum(tl.where(o_c[:, None] == i * S + S - 1, b, 0.0), 0)
                qd = tl.where(o_c[:, None] >= i * S + S, b_q * (scale * tl.exp(tl.minimum(b - b_e[None, :], 0.0))), 0.0)
                at = _dot(k_i * tl.exp(b_el[None, :] - b_l), tl.trans(qd), DT, PREC)  # [S, C]: A[t, s]^T
                acc += _dot(at, b_do, DT, PREC)
            a_d = tl.zeros([S, S], dtype=tl.float32)  # a_d[s, j] = A[query j, key s], s <= j
            b_run = tl.zeros([BK], dtype=tl.float32)
            for j in range(S):
                tok_j = (i_b * T + t0 + i * S + j).to(tl.int64) * H + i_h
                ok_j = t0 + i * S + j < T
                q_j = tl.load(q + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32) * scale
                b_run += tl.load(g + tok_j * K + o_k, mask=m_k & ok_j, other=0.0).to(tl.float32)
                e = tl.exp(tl.where(o_s[:, None] <= j, b_run[None, :] - b_l, float("-inf")))
                col = tl.sum(k_i * q_j[None, :] * e, 1)
                a_d = tl.where(o_s[None, :] == j, col[:, None], a_d)
            acc += _dot(a_d, _rows(do, tok, m_s, o_v, m_v, V), DT, PREC)
            m_out = m_s[:, None] & m_v[None, :]
            tl.store(dv + tok[:, None] * V + o_v[None, :], acc.to(dv.dtype.element_ty), mask=m_out)
            if i_v == 0:
                m_dg = m_s[:, None] & m_k[None, :]
                p_dg = tok[:, None] * K + o_k[None, :]
                d_g = tl.load(dg_loc + p_dg, mask=m_dg, other=0.0) + suffix[None, :]
                tl.store(dg + p_dg, d_g.to(dg.dtype.element_ty), mask=m_dg)

"""Triton kernels of fused bi-level routing attention (`@triton.jit` only; launched by `triton.py`).

Token attention is one program per (image, query region, block of the region's query pixels, head): it loads
the queries once and walks the `topk * P` routed key tokens (P = pixels per region) in tiles of BLOCK_N tokens,
computing each token's map coordinates from the route index by arithmetic, so K and V are read straight from
the channel-last [B, H, W, C] maps. Packing the routed regions' tokens into one key tile (token j is pixel
j % P of routed region j // P) keeps tl.dot's N dimension >= 16 even for BiFormer stage 3's 4-pixel regions
(16 routed regions x 4 = one 64-key tile). Online softmax in fp32 (base 2); the log-sum-exp is saved for the
backward.

Backward: one program per forward program recomputes the probabilities from the saved log-sum-exp, keeps
dQ in registers and adds dK/dV into fp32 buffers with `tl.atomic_add`. Why atomics rather than a second
pass over the inverted route: a key region receives on average `topk` query regions (the fan-in of one
region in the route graph), so contention is low, while a second pass would recompute QK^T and the
probabilities a second time, need a sort/CSR of the inverted route per image and balance badly (one
popular region can be routed by all S^2 regions). The price: dK/dV summation order is not deterministic
(fp32, so only last-bit differences).
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _dot(a, b, PREC: tl.constexpr, DOT_F32: tl.constexpr):
    """a @ b with fp32 accumulation. DOT_F32 (interpreter only) upcasts first: the CPU interpreter's
    bf16 tl.dot returns garbage, and a bf16 x bf16 MMA has exact products anyway."""
    if DOT_F32:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        out = tl.dot(a, b, input_precision=PREC)
    return out


@triton.jit
def _query_tile(r, mb, height, width, N_WIN: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, BLOCK_M: tl.constexpr):
    """Map coordinates (y, x) [BLOCK_M] of query block `mb` of region `r`, and which are real tokens."""
    offs = mb * BLOCK_M + tl.arange(0, BLOCK_M)
    y = (r // N_WIN) * RH + offs // RW
    x = (r % N_WIN) * RW + offs % RW
    ok = (offs < RH * RW) & (y < height) & (x < width)
    return y, x, ok


@triton.jit
def _key_tile(
    route_row,
    j0,
    height,
    width,
    N_WIN: tl.constexpr,
    RH: tl.constexpr,
    RW: tl.constexpr,
    TOPK: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Map coordinates (y, x) [BLOCK_N] of routed key tokens j0 ... j0 + BLOCK_N - 1 and which are real:
    token j is pixel j % P of the region route_row[j // P] (the route is [TOPK] int64 at route_row)."""
    P: tl.constexpr = RH * RW
    offs = j0 + tl.arange(0, BLOCK_N)
    in_range = offs < TOPK * P
    region = tl.load(route_row + offs // P, mask=in_range, other=0).to(tl.int32)
    pix = offs % P
    y = (region // N_WIN) * RH + pix // RW
    x = (region % N_WIN) * RW + pix % RW
    ok = in_range & (y < height) & (x < width)
    return y, x, ok


@triton.jit
def bra_fwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, lse_ptr, route_ptr,
    sqb, sqy, sqx, skb, sky, skx, svb, svy, svx, sob, soy, sox,
    height, width, heads, scale_log2,
    N_WIN: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, TOPK: tl.constexpr,
    DQ: tl.constexpr, DV: tl.constexpr, M_BLOCKS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Grid (B * S^2 * M_BLOCKS, heads). Writes o [B, H, W, Cv] and lse [B, heads, H, W] (base 2, fp32)
    for the query block's real tokens."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    R: tl.constexpr = N_WIN * N_WIN
    row = pid // M_BLOCKS  # b * R + r: the route row
    mb = pid % M_BLOCKS
    b = (row // R).to(tl.int64)
    r = row % R
    offs_dq = tl.arange(0, BLOCK_DQ)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQ
    dv_ok = offs_dv < DV

    qy, qx, q_ok = _query_tile(r, mb, height, width, N_WIN, RH, RW, BLOCK_M)
    q_ptrs = q_ptr + b * sqb + (qy * sqy + qx * sqx)[:, None] + (h * DQ + offs_dq)[None, :]
    q = tl.load(q_ptrs, mask=q_ok[:, None] & dq_ok[None, :], other=0.0)

    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    route_row = route_ptr + row.to(tl.int64) * TOPK
    for j0 in range(0, TOPK * RH * RW, BLOCK_N):
        ky, kx, k_ok = _key_tile(route_row, j0, height, width, N_WIN, RH, RW, TOPK, BLOCK_N)
        kt_ptrs = k_ptr + b * skb + (ky * sky + kx * skx)[None, :] + (h * DQ + offs_dq)[:, None]
        kt = tl.load(kt_ptrs, mask=k_ok[None, :] & dq_ok[:, None], other=0.0)  # [BLOCK_DQ, BLOCK_N]
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        s = tl.where(k_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no real key yet: no NaN
        alpha = tl.exp2(m_i - m_use)
        p = tl.exp2(s - m_use[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        v_ptrs = v_ptr + b * svb + (ky * svy + kx * svx)[:, None] + (h * DV + offs_dv)[None, :]
        v = tl.load(v_ptrs, mask=k_ok[:, None] & dv_ok[None, :], other=0.0)  # [BLOCK_N, BLOCK_DV]
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, PREC, DOT_F32)
        m_i = m_new

    # every real query routes at least one real region first (padding regions rank last), so l_i > 0
    # on real rows; the guards only keep the padding rows (never stored) finite
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[:, None]
    o_ptrs = o_ptr + b * sob + (qy * soy + qx * sox)[:, None] + (h * DV + offs_dv)[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=q_ok[:, None] & dv_ok[None, :])
    lse = tl.where(m_i == float("-inf"), 0.0, m_i) + tl.log2(l_safe)
    lse_ptrs = lse_ptr + (b * heads + h) * height * width + qy * width + qx
    tl.store(lse_ptrs, lse, mask=q_ok)


@triton.jit
def bra_bwd_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, do_ptr, lse_ptr, route_ptr, dq_ptr, dk_ptr, dv_ptr,
    sqb, sqy, sqx, skb, sky, skx, svb, svy, svx, sob, soy, sox, sdob, sdoy, sdox,
    height, width, heads, scale, scale_log2,
    N_WIN: tl.constexpr, RH: tl.constexpr, RW: tl.constexpr, TOPK: tl.constexpr,
    DQ: tl.constexpr, DV: tl.constexpr, M_BLOCKS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_DQ: tl.constexpr, BLOCK_DV: tl.constexpr,
    PREC: tl.constexpr, DOT_F32: tl.constexpr,
):  # fmt: skip
    """Grid as the forward. dq [B, H, W, Cqk] (input dtype) is written by the query block's program;
    dk [B, H, W, Cqk] and dv [B, H, W, Cv] (contiguous fp32, zeroed) receive atomic adds."""
    pid = tl.program_id(0)
    h = tl.program_id(1)
    R: tl.constexpr = N_WIN * N_WIN
    row = pid // M_BLOCKS
    mb = pid % M_BLOCKS
    b = (row // R).to(tl.int64)
    r = row % R
    offs_dq = tl.arange(0, BLOCK_DQ)
    offs_dv = tl.arange(0, BLOCK_DV)
    dq_ok = offs_dq < DQ
    dv_ok = offs_dv < DV
    c_qk = height * width * heads * DQ  # per-image strides of the contiguous dq / dk buffers
    c_v = height * width * heads * DV

    qy, qx, q_ok = _query_tile(r, mb, height, width, N_WIN, RH, RW, BLOCK_M)
    q_mask = q_ok[:, None] & dq_ok[None, :]
    o_mask = q_ok[:, None] & dv_ok[None, :]
    q = tl.load(q_ptr + b * sqb + (qy * sqy + qx * sqx)[:, None] + (h * DQ + offs_dq)[None, :], mask=q_mask, other=0.0)
    do = tl.load(
        do_ptr + b * sdob + (qy * sdoy + qx * sdox)[:, None] + (h * DV + offs_dv)[None, :], mask=o_mask, other=0.0
    )
    o = tl.load(o_ptr + b * sob + (qy * soy + qx * sox)[:, None] + (h * DV + offs_dv)[None, :], mask=o_mask, other=0.0)
    delta = tl.sum(do.to(tl.float32) * o.to(tl.float32), 1)  # rowsum(dO * O) [BLOCK_M]
    lse = tl.load(lse_ptr + (b * heads + h) * height * width + qy * width + qx, mask=q_ok, other=0.0)

    dq = tl.zeros([BLOCK_M, BLOCK_DQ], tl.float32)
    route_row = route_ptr + row.to(tl.int64) * TOPK
    for j0 in range(0, TOPK * RH * RW, BLOCK_N):
        ky, kx, k_ok = _key_tile(route_row, j0, height, width, N_WIN, RH, RW, TOPK, BLOCK_N)
        tok = ky * width + kx
        kt = tl.load(
            k_ptr + b * skb + (ky * sky + kx * skx)[None, :] + (h * DQ + offs_dq)[:, None],
            mask=k_ok[None, :] & dq_ok[:, None],
            other=0.0,
        )  # [BLOCK_DQ, BLOCK_N]
        vt = tl.load(
            v_ptr + b * svb + (ky * svy + kx * svx)[None, :] + (h * DV + offs_dv)[:, None],
            mask=k_ok[None, :] & dv_ok[:, None],
            other=0.0,
        )  # [BLOCK_DV, BLOCK_N]
        s = _dot(q, kt, PREC, DOT_F32) * scale_log2
        p = tl.exp2(s - lse[:, None])
        p = tl.where(q_ok[:, None] & k_ok[None, :], p, 0.0)  # [BLOCK_M, BLOCK_N]
        dp = _dot(do, vt, PREC, DOT_F32)
        ds = p * (dp - delta[:, None])  # d loss / d (scaled logit)
        dq += _dot(ds.to(kt.dtype), tl.trans(kt), PREC, DOT_F32)
        dv_tile = _dot(tl.trans(p.to(do.dtype)), do, PREC, DOT_F32)  # [BLOCK_N, BLOCK_DV]
        dk_tile = _dot(tl.trans(ds.to(q.dtype)), q, PREC, DOT_F32) * scale  # [BLOCK_N, BLOCK_DQ]
        tl.atomic_add(
            dk_ptr + b * c_qk + (tok * heads * DQ + h * DQ)[:, None] + offs_dq[None, :],
            dk_tile,
            mask=k_ok[:, None] & dq_ok[None, :],
            sem="relaxed",
        )
        tl.atomic_add(
            dv_ptr + b * c_v + (tok * heads * DV + h * DV)[:, None] + offs_dv[None, :],
            dv_tile,
            mask=k_ok[:, None] & dv_ok[None, :],
            sem="relaxed",
        )

    dq_ptrs = dq_ptr + b * c_qk + ((qy * width + qx) * heads * DQ + h * DQ)[:, None] + offs_dq[None, :]
    tl.store(dq_ptrs, (dq * scale).to(dq_ptr.dtype.element_ty), mask=q_mask)

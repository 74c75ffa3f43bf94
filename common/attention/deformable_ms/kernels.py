"""Triton kernels of multi-scale deformable attention (imported lazily by `triton.py`; needs triton).

Layouts (all contiguous, row-major):
    value  [B, Nv, H, D]          locations [B, Nq, H, L, P, 2] (x, y)     weights [B, Nq, H, L, P]
    shapes [L, 2] int32 (H_l, W_l) starts   [L] int32                       out     [B, Nq, H, D]

One program handles BLOCK_Q queries of one (batch, head) and the whole head dim (BLOCK_D >= D, masked), so
the per-sample reductions over D in the backward stay inside the program (no atomics for the location and
weight grads). Spatial shapes and level starts are read from small int tensors: a new image size does not
recompile; the head dim D is a constexpr (fixed per model; lets the compiler prove the D-vectors aligned and
the D mask constant over each vector, so gathers and atomics stay 16-byte vectors). L and P are runtime
loop bounds.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _corners(loc_ptr, row, q_mask, lvl, p, shapes_ptr, starts_ptr):
    """Bilinear corners of one (level, point) for a block of queries.

    Returns the corner indices into the flattened value (x0/x1, y0/y1 as token rows), their validity masks,
    the fractional parts fx, fy [BLOCK_Q] and the level width and height (W_l, H_l) as fp32 scalars.
    """
    h_l = tl.load(shapes_ptr + 2 * lvl)
    w_l = tl.load(shapes_ptr + 2 * lvl + 1)
    start = tl.load(starts_ptr + lvl)
    lp = (row + p) * 2  # row = ((b*Nq + q)*H + h)*L*P + lvl*P, int64
    loc_x = tl.load(loc_ptr + lp, mask=q_mask, other=0.0).to(tl.float32)
    loc_y = tl.load(loc_ptr + lp + 1, mask=q_mask, other=0.0).to(tl.float32)
    wf = w_l.to(tl.float32)
    hf = h_l.to(tl.float32)
    # align_corners=False: pixel i has its centre at (i + 0.5) / W. Clamping to [-2, W + 1] changes
    # nothing (every corner is outside there either way) but keeps the int conversion in range.
    x = tl.minimum(tl.maximum(loc_x * wf - 0.5, -2.0), wf + 1.0)
    y = tl.minimum(tl.maximum(loc_y * hf - 0.5, -2.0), hf + 1.0)
    x0f = tl.floor(x)
    y0f = tl.floor(y)
    fx = x - x0f
    fy = y - y0f
    x0 = x0f.to(tl.int32)
    y0 = y0f.to(tl.int32)
    x1 = x0 + 1
    y1 = y0 + 1
    vx0 = (x0 >= 0) & (x0 < w_l)
    vx1 = (x1 >= 0) & (x1 < w_l)
    vy0 = (y0 >= 0) & (y0 < h_l) & q_mask
    vy1 = (y1 >= 0) & (y1 < h_l) & q_mask
    r0 = start + y0 * w_l  # token row of (y0, x=0)
    r1 = start + y1 * w_l
    return r0 + x0, r0 + x1, r1 + x0, r1 + x1, vy0 & vx0, vy0 & vx1, vy1 & vx0, vy1 & vx1, fx, fy, wf, hf


@triton.jit
def _program_coords(Nq, H, BLOCK_Q: tl.constexpr):
    """(head, query block, batch) of this program, head fastest: the programs running together read one
    batch's value (a few MB, L2-resident) and spread their atomic adds over all heads' rows of it."""
    pid = tl.program_id(0)
    h = pid % H
    rest = pid // H
    num_q_blocks = tl.cdiv(Nq, BLOCK_Q)
    return h, rest % num_q_blocks, rest // num_q_blocks


# Sizes are not specialised (divisible-by-16 / ==1 variants): a new image size or query count reuses the binary.
@triton.jit(do_not_specialize=["Nq", "Nv", "H", "L", "P"])
def msda_fwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, out_ptr,
    Nq, Nv, H, L, P,
    D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """Grid (B * cdiv(Nq, BLOCK_Q) * H,). out[b, q, h, :] = sum_{l,p} a * bilinear(value[b, level l, h, :])."""
    h, pid_q, b = _program_coords(Nq, H, BLOCK_Q)
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < Nq
    dm = d[None, :] < D  # constant over each 16-byte vector when D % 4 == 0: keeps loads vectorised
    d2 = d[None, :]
    bqh = (b.to(tl.int64) * Nq + q) * H + h  # [BLOCK_Q] int64: row of (b, q, h)
    v_base = value_ptr + (b.to(tl.int64) * Nv * H + h) * D  # value[b, 0, h, 0]
    stride_v = H * D  # between value tokens
    acc = tl.zeros((BLOCK_Q, BLOCK_D), dtype=tl.float32)
    for lvl in range(L):
        for p in range(P):
            row = bqh * (L * P) + lvl * P
            i00, i01, i10, i11, m00, m01, m10, m11, fx, fy, wf, hf = _corners(
                loc_ptr, row, q_mask, lvl, p, shapes_ptr, starts_ptr
            )
            a = tl.load(attn_ptr + row + p, mask=q_mask, other=0.0).to(tl.float32)
            v00 = tl.load(v_base + i00[:, None] * stride_v + d2, mask=m00[:, None] & dm, other=0.0).to(tl.float32)
            v01 = tl.load(v_base + i01[:, None] * stride_v + d2, mask=m01[:, None] & dm, other=0.0).to(tl.float32)
            v10 = tl.load(v_base + i10[:, None] * stride_v + d2, mask=m10[:, None] & dm, other=0.0).to(tl.float32)
            v11 = tl.load(v_base + i11[:, None] * stride_v + d2, mask=m11[:, None] & dm, other=0.0).to(tl.float32)
            # corner weights times the attention weight: 4 scalars per query instead of 4 per channel
            w00 = (1.0 - fx) * (1.0 - fy) * a
            w01 = fx * (1.0 - fy) * a
            w10 = (1.0 - fx) * fy * a
            w11 = fx * fy * a
            acc += w00[:, None] * v00 + w01[:, None] * v01 + w10[:, None] * v10 + w11[:, None] * v11
    out_offs = bqh[:, None] * D + d[None, :]
    tl.store(out_ptr + out_offs, acc.to(out_ptr.dtype.element_ty), mask=q_mask[:, None] & dm)


@triton.jit(do_not_specialize=["Nq", "Nv", "H", "L", "P"])
def msda_bwd_kernel(
    value_ptr, shapes_ptr, starts_ptr, loc_ptr, attn_ptr, grad_out_ptr,
    grad_value_ptr, grad_loc_ptr, grad_attn_ptr,
    Nq, Nv, H, L, P,
    D: tl.constexpr, BLOCK_Q: tl.constexpr, BLOCK_D: tl.constexpr, GRAD_VALUE: tl.constexpr,
):  # fmt: skip
    """Grid (B * cdiv(Nq, BLOCK_Q) * H,).

    grad_value [B, Nv, H, D] fp32, zero-filled by the caller: scattered with atomic adds (a value token is
    read by any number of queries). grad_loc [B, Nq, H, L, P, 2] and grad_attn [B, Nq, H, L, P]: written once
    each (this program owns its queries and all of D). With g = grad_out[b, q, h, :] and s_c = <g, v_c>:
        grad_attn = sum_c w_c s_c
        grad_x = a * W * ((1 - fy) (s_01 - s_00) + fy (s_11 - s_10)),  grad_y likewise with H and fx.
    """
    h, pid_q, b = _program_coords(Nq, H, BLOCK_Q)
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = tl.arange(0, BLOCK_D)
    q_mask = q < Nq
    bqh = (b.to(tl.int64) * Nq + q) * H + h
    v_off = (b.to(tl.int64) * Nv * H + h) * D
    v_base = value_ptr + v_off
    gv_base = grad_value_ptr + v_off
    stride_v = H * D
    d2 = d[None, :]
    dm = d[None, :] < D
    g = tl.load(grad_out_ptr + bqh[:, None] * D + d2, mask=q_mask[:, None] & dm, other=0.0).to(tl.float32)
    for lvl in range(L):
        for p in range(P):
            row = bqh * (L * P) + lvl * P
            i00, i01, i10, i11, m00, m01, m10, m11, fx, fy, wf, hf = _corners(
                loc_ptr, row, q_mask, lvl, p, shapes_ptr, starts_ptr
            )
            a = tl.load(attn_ptr + row + p, mask=q_mask, other=0.0).to(tl.float32)
            o00 = i00[:, None] * stride_v + d2
            o01 = i01[:, None] * stride_v + d2
            o10 = i10[:, None] * stride_v + d2
            o11 = i11[:, None] * stride_v + d2
            mm00 = m00[:, None] & dm
            mm01 = m01[:, None] & dm
            mm10 = m10[:, None] & dm
            mm11 = m11[:, None] & dm
            s00 = tl.sum(g * tl.load(v_base + o00, mask=mm00, other=0.0).to(tl.float32), axis=1)
            s01 = tl.sum(g * tl.load(v_base + o01, mask=mm01, other=0.0).to(tl.float32), axis=1)
            s10 = tl.sum(g * tl.load(v_base + o10, mask=mm10, other=0.0).to(tl.float32), axis=1)
            s11 = tl.sum(g * tl.load(v_base + o11, mask=mm11, other=0.0).to(tl.float32), axis=1)
            c00 = (1.0 - fx) * (1.0 - fy)
            c01 = fx * (1.0 - fy)
            c10 = (1.0 - fx) * fy
            c11 = fx * fy
            grad_a = c00 * s00 + c01 * s01 + c10 * s10 + c11 * s11
            grad_x = a * wf * ((1.0 - fy) * (s01 - s00) + fy * (s11 - s10))
            grad_y = a * hf * ((1.0 - fx) * (s10 - s00) + fx * (s11 - s01))
            tl.store(grad_attn_ptr + row + p, grad_a.to(grad_attn_ptr.dtype.element_ty), mask=q_mask)
            lp = (row + p) * 2
            tl.store(grad_loc_ptr + lp, grad_x.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
            tl.store(grad_loc_ptr + lp + 1, grad_y.to(grad_loc_ptr.dtype.element_ty), mask=q_mask)
            if GRAD_VALUE:
                # relaxed: only the sum matters, no ordering with other memory operations
                ag = a[:, None] * g
                tl.atomic_add(gv_base + o00, c00[:, None] * ag, mask=mm00, sem="relaxed")
                tl.atomic_add(gv_base + o01, c01[:, None] * ag, mask=mm01, sem="relaxed")
                tl.atomic_add(gv_base + o10, c10[:, None] * ag, mask=mm10, sem="relaxed")
                tl.atomic_add(gv_base + o11, c11[:, None] * ag, mask=mm11, sem="relaxed")

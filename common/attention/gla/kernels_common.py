"""Shared `@triton.jit` helpers of the chunked GLA kernels (`kernels_fwd.py`, `kernels_bwd.py`): the dot and
cast helpers (GPU numbers also under the CPU interpreter), chunk and sub-chunk coordinates, row loads.

Layout: q, k, g: [B, T, H, K]; v, do: [B, T, H, V]; gcs (chunk-local inclusive cumsum of g): [B, T, H, K]
float32; per-chunk states h, dh: [B, H, NT, K, V] (input dtype); h0, ht, dh0, dht: [B, H, K, V] float32.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dot(a, b, DT: tl.constexpr, PREC: tl.constexpr):
    """a @ b with both operands rounded to DT, float32 accumulation (PREC: "tf32" for bf16/fp16, "tf32x3"
    for fp32). PREC "emulate" (the CPU interpreter, whose bf16 tl.dot is wrong) rounds the operands to DT
    and multiplies them in float32: the same numbers as a tensor-core MMA."""
    if PREC == "emulate":
        return tl.dot(cast(a, DT, PREC).to(tl.float32), cast(b, DT, PREC).to(tl.float32), input_precision="ieee")
    return tl.dot(a.to(DT), b.to(DT), input_precision=PREC)


@triton.jit
def cast(x, DT: tl.constexpr, PREC: tl.constexpr):
    """x.to(DT), rounding to nearest even as the GPU does, also under the CPU interpreter (PREC "emulate"),
    whose float32 -> bfloat16 cast truncates (triton 3.8): a biased error twice the GPU's."""
    if PREC == "emulate":  # noqa: SIM102 (two constexpr tests, resolved at compile time)
        if DT == tl.bfloat16:  # noqa: SIM300 (DT is a constexpr argument, not a constant)
            bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
            x = bits.to(tl.float32, bitcast=True)
    return x.to(DT)


@triton.jit
def dot_fine(a, b, PREC_FINE: tl.constexpr):
    """a @ b with float32 operands at tf32 precision or better, for the products of the intra-chunk maps
    A and dA (bf16 operands there leave the in-chunk cancellation of dg short of the bf16 tolerance).
    PREC_FINE: "tf32" (bf16/fp16 inputs on a GPU: 10 mantissa bits to bf16's 7), "tf32x3" (fp32 inputs);
    under the CPU interpreter "emulate_tf32" truncates the operands to tf32, as the tensor cores read
    them, and "emulate" multiplies in float32."""
    a, b = a.to(tl.float32), b.to(tl.float32)
    if PREC_FINE == "emulate_tf32":
        return tl.dot(to_tf32(a), to_tf32(b), input_precision="ieee")
    if PREC_FINE == "emulate":
        return tl.dot(a, b, input_precision="ieee")
    return tl.dot(a, b, input_precision=PREC_FINE)


@triton.jit
def to_tf32(x):
    """float32 -> its tf32 truncation (sign, 8 exponent and the top 10 mantissa bits), still float32."""
    return (x.to(tl.uint32, bitcast=True) & 0xFFFFE000).to(tl.float32, bitcast=True)


@triton.jit
def chunk_coords(i_t, i_bh, T, H: tl.constexpr, C: tl.constexpr):
    """Chunk i_t of sequence i_bh (= b * H + h): its first token as an int64 offset in tokens, (b T + t0) H + h,
    its rows 0..C-1 and their mask (inside the sequence)."""
    o_c = tl.arange(0, C)
    t0 = i_t * C
    return ((i_bh // H) * T + t0).to(tl.int64) * H + i_bh % H, o_c, t0 + o_c < T


@triton.jit
def subchunk_coords(i_t, i_i, T, C: tl.constexpr, S: tl.constexpr):
    """Sub-chunk i_i of chunk i_t: its rows 0..S-1, its first row in the sequence, its rows relative to the
    chunk's first token, and their mask (inside the sequence)."""
    o_s = tl.arange(0, S)
    s0 = i_t * C + i_i * S
    return o_s, s0, i_i * S + o_s, s0 + o_s < T


@triton.jit
def load_row(ptr, tok0, row, col, mask, H: tl.constexpr, K: tl.constexpr):
    """One token row [N] of a [B, T, H, K] tensor, 0 outside `mask`: `row` relative to the first token tok0."""
    return tl.load(ptr + (tok0 + row * H) * K + col, mask=mask, other=0.0)


@triton.jit
def chunk_total(gcs, tok0, i_t, T, o_k, m_k, H: tl.constexpr, K: tl.constexpr, C: tl.constexpr):
    """b_C [BK]: the chunk's total log decay, gcs at its last row inside the sequence."""
    return load_row(gcs, tok0, tl.minimum(T - i_t * C, C) - 1, o_k, m_k, H, K)


@triton.jit
def load_rows(ptr, row, m_row, col, m_col, row_stride: tl.constexpr):
    """Load a [R, N] tile, 0 outside the masks: `ptr` points at the tile's first token (its int64 offset
    taken once, as a scalar), `row` [R] are token rows relative to it (int32: per-element offsets stay
    32-bit, fewer registers), `row_stride` = H * width, `col` [N] the channels."""
    return tl.load(ptr + row[:, None] * row_stride + col[None, :], mask=m_row[:, None] & m_col[None, :], other=0.0)


@triton.jit
def load_token_rows(ptr, tok, m_tok, col, m_col, stride: tl.constexpr):
    """Row load with int64 token offsets (b*T + t)*H + h, [R], for the state passes (32-bit offsets spill
    more there at 4 warps, by ptxas)."""
    return tl.load(ptr + tok[:, None] * stride + col[None, :], mask=m_tok[:, None] & m_col[None, :], other=0.0)


@triton.jit
def state_tile(H: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """The [BK, BV] state tile of a state pass on grid (cdiv(K, BK), cdiv(V, BV), B * H): batch, head, their
    flat index, key / value columns and masks, and the tile's offsets in a [K, V] state."""
    i_k, i_v, i_bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    o_k = i_k * BK + tl.arange(0, BK)
    o_v = i_v * BV + tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    return i_bh // H, i_bh % H, i_bh, o_k, o_v, m_k, m_v, m_k[:, None] & m_v[None, :], o_k[:, None] * V + o_v[None, :]

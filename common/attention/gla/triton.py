"""Chunked GLA in Triton, forward and backward: `gla_chunked_triton` (the only module that imports triton).

Same contract as `reference.gla_chunked_torch` (fla's layout): q, k, g: [B, T, H, K]; v: [B, T, H, V];
g = log-space forget gates (<= 0); initial_state [B or 1, H, K, V]; returns o [B, T, H, V] in q's
dtype and, with output_final_state, the final state [B, H, K, V] in float32. Gradients flow to q, k, v,
g and initial_state. K <= 256 (one key block per program); V any size (blocked); T any length.

Design (chunks of 64, sub-chunks of 16; kernels in `triton_kernels.py`):
    forward:  fwd_h (per-chunk states h, sequential over chunks, grid over K and V blocks and B*H),
              fwd_o (outputs, parallel over chunks). Saved for backward: the inputs, h ([B, H, NT, K, V]
              in the input dtype) and the final state (fp32). No other intermediates (b = cumsum(g)
              and the intra-chunk maps are recomputed where needed).
    backward: bwd_dh (state gradients dh [B, H, NT, K, V], reverse), bwd_dqk (dq, dk and the in-chunk
              reverse cumsum of dg, kept fp32 for bf16/fp16 inputs, and per-chunk totals [B*H, NT, K]
              fp32), a tiny torch suffix sum over chunks, bwd_dv (dv, and adds each chunk's suffix to
              dg, rounding it once).
All exponents are <= 0 (decays split at a sub-chunk boundary, diagonal 16 x 16 blocks exact).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from common.attention.dispatch import interpreting
from common.attention.gla import triton_kernels as kern

CHUNK, SUB = 64, 16
MAX_K = 256
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _pow2(n: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(n))


def _dot_dtype(dtype: torch.dtype):
    """(operand dtype, precision) of the kernels' dots: the input dtype; float32 as "tf32x3" on a GPU
    (three tf32 MMAs, ~fp32 accurate; plain "ieee" FMA dots spill kilobytes of registers here).

    The CPU interpreter's bf16/fp16 tl.dot is wrong (triton 3.8): there operands are rounded to the input
    dtype and multiplied in float32 ("emulate"), which gives the GPU's numbers.
    """
    if interpreting():
        return _TL_DTYPES[dtype], "emulate"
    if dtype == torch.float32:
        return tl.float32, "tf32x3"
    return _TL_DTYPES[dtype], "tf32"


def _configs(k_dim: int, v_dim: int, dtype: torch.dtype = torch.bfloat16) -> dict:
    """Fixed launch configs keyed on the head dims (no autotuning: GPU time is scarce).

    State kernels (fwd_h, bwd_dh): K and V in blocks of <= 64 (more programs for the sequential scan),
    2 stages to prefetch the next chunk. Parallel kernels: the whole key dim (BK >= K); fwd_o and
    bwd_dv take V in blocks of up to 128 (the intra-chunk map is recomputed per V block, so one block
    when V <= 128; 64 at K = 256 to bound registers), bwd_dqk takes K in blocks of up to 128 and loops
    over V in blocks of 64; 8 warps from 64 x 64 tiles on; 1 stage (short V loops; keeps shared memory
    well under 228 KB). Register use checked by compiling for sm_90 (ptxas): no or small spills for
    bf16/fp16. float32 (exact "ieee" dots on CUDA cores, a testing/reference path) takes halved blocks.
    """
    bk = _pow2(k_dim)
    wide = 128 if bk <= 128 and dtype != torch.float32 else 64
    bv = min(_pow2(v_dim), wide)
    return dict(
        BK=bk,
        BV=bv,
        BK_DQK=min(bk, wide),
        BV_DQK=min(_pow2(v_dim), 64),
        BK_H=min(bk, 64),
        BV_H=min(_pow2(v_dim), 64),
        warps=8 if bk * bv >= 64 * 64 else 4,
        warps_dqk=8 if bk >= 64 else 4,
    )


def _check(q, k, v, g, initial_state) -> None:
    """Clear errors for what the kernels do not take (shape, dtype, device)."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != g.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "gla (triton): expected q, k, g [B, T, H, K] and v [B, T, H, V]; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}"
        )
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if t.dtype not in _TL_DTYPES:
            raise TypeError(f"gla (triton): {name} has dtype {t.dtype}; expected float32, bfloat16 or float16")
        if t.device != q.device:
            raise ValueError(f"gla (triton): {name} is on {t.device}, q on {q.device}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"gla (triton): q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    b, _, h, dk = q.shape
    if dk > MAX_K:
        raise ValueError(f"gla (triton): key dim K={dk} > {MAX_K}; use impl='torch'")
    if initial_state is not None:
        shape = tuple(initial_state.shape)
        if initial_state.dim() != 4 or shape[0] not in (1, b) or shape[1:] != (h, dk, v.shape[-1]):
            raise ValueError(f"gla (triton): initial_state {shape}; expected [{b} or 1, {h}, {dk}, {v.shape[-1]}]")
        if initial_state.device != q.device:
            raise ValueError(f"gla (triton): initial_state is on {initial_state.device}, q on {q.device}")


def _constexprs(q: torch.Tensor, v: torch.Tensor) -> dict:
    """The compile-time arguments every GLA kernel takes: heads, key/value widths, chunk, dot dtype/precision."""
    dt, prec = _dot_dtype(q.dtype)
    return dict(H=q.shape[2], K=q.shape[3], V=v.shape[-1], C=CHUNK, DT=dt, PREC=prec)


def _forward(q, k, v, g, h0, scale):
    """Returns o [B, T, H, V], h [B, H, NT, K, V] (input dtype), ht [B, H, K, V] fp32."""
    b, t, nh, dk = q.shape
    dv = v.shape[-1]
    nt = triton.cdiv(t, CHUNK)
    cfg = _configs(dk, dv, q.dtype)
    dims = _constexprs(q, v)
    h = q.new_empty(b, nh, nt, dk, dv)
    ht = q.new_empty(b, nh, dk, dv, dtype=torch.float32)
    o = v.new_empty(b, t, nh, dv)
    h0_arg = h0 if h0 is not None else ht  # never read without HAS_H0
    h0_bstride = 0 if h0 is None or h0.shape[0] == 1 else nh * dk * dv
    grid = (triton.cdiv(dk, cfg["BK_H"]), triton.cdiv(dv, cfg["BV_H"]), b * nh)
    kern.fwd_h_kernel[grid](
        k,
        v,
        g,
        h0_arg,
        h,
        ht,
        t,
        nt,
        h0_bstride,
        **dims,
        BK=cfg["BK_H"],
        BV=cfg["BV_H"],
        HAS_H0=h0 is not None,
        num_warps=4,
        num_stages=2,
    )
    grid = (triton.cdiv(dv, cfg["BV"]), nt, b * nh)
    kern.fwd_o_kernel[grid](
        q,
        k,
        v,
        g,
        h,
        o,
        scale,
        t,
        nt,
        **dims,
        S=SUB,
        BK=cfg["BK"],
        BV=cfg["BV"],
        num_warps=cfg["warps"],
        num_stages=1,
    )
    return o, h, ht


def _backward(q, k, v, g, h, ht, do, dht, scale):
    """Returns dq, dk, dv, dg (input dtypes) and dh0 [B, H, K, V] fp32."""
    b, t, nh, dk = q.shape
    dv_dim = v.shape[-1]
    nt = triton.cdiv(t, CHUNK)
    cfg = _configs(dk, dv_dim, q.dtype)
    dims = _constexprs(q, v)
    dh = q.new_empty(b, nh, nt, dk, dv_dim)
    dh0 = q.new_empty(b, nh, dk, dv_dim, dtype=torch.float32)
    grid = (triton.cdiv(dk, cfg["BK_H"]), triton.cdiv(dv_dim, cfg["BV_H"]), b * nh)
    kern.bwd_dh_kernel[grid](
        q,
        g,
        do,
        dht if dht is not None else dh0,
        dh,
        dh0,
        scale,
        t,
        nt,
        **dims,
        BK=cfg["BK_H"],
        BV=cfg["BV_H"],
        HAS_DHT=dht is not None,
        num_warps=4,
        num_stages=2,
    )
    dq, dk_, dg = torch.empty_like(q), torch.empty_like(k), torch.empty_like(g)
    # the in-chunk part of dg stays float32 until the cross-chunk suffix is added (in place for fp32)
    dg_loc = dg if g.dtype == torch.float32 else g.new_empty(g.shape, dtype=torch.float32)
    dg_tot = q.new_empty(b * nh, nt, dk, dtype=torch.float32)
    kern.bwd_dqk_kernel[(triton.cdiv(dk, cfg["BK_DQK"]), nt, b * nh)](
        q,
        k,
        v,
        g,
        h,
        do,
        dh,
        dq,
        dk_,
        dg_loc,
        dg_tot,
        scale,
        t,
        nt,
        **dims,
        S=SUB,
        BK=cfg["BK_DQK"],
        BV=cfg["BV_DQK"],
        num_warps=cfg["warps_dqk"],
        num_stages=1,
    )
    # dL/dg at each next chunk's first token: the later chunks' totals plus the final-state term. That
    # term takes dht as stored in dh (rounded to the input dtype), as the last chunk's dk did: the two
    # nearly cancel, and rounding only one of them would leave its rounding error in every dg.
    dg_suffix = dg_tot.flip(1).cumsum(1).flip(1) - dg_tot
    if dht is not None:
        dg_suffix += (ht * dh[:, :, -1].float()).sum(-1).view(b * nh, 1, dk)
    dv = torch.empty_like(v)
    kern.bwd_dv_kernel[(triton.cdiv(dv_dim, cfg["BV"]), nt, b * nh)](
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
        t,
        nt,
        **dims,
        S=SUB,
        BK=cfg["BK"],
        BV=cfg["BV"],
        num_warps=cfg["warps"],
        num_stages=1,
    )
    return dq, dk_, dv, dg, dh0


class _ChunkGLAFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, initial_state, scale, output_final_state):
        q, k, v, g = (x.contiguous() for x in (q, k, v, g))
        h0 = None if initial_state is None else initial_state.contiguous()
        o, h, ht = _forward(q, k, v, g, h0, scale)
        ctx.set_materialize_grads(False)  # an unused final state gives dht = None, not a zeros tensor
        ctx.save_for_backward(q, k, v, g, h, ht)
        ctx.scale = scale
        ctx.h0_meta = None if initial_state is None else (initial_state.shape, initial_state.dtype)
        if not output_final_state:
            ctx.mark_non_differentiable(ht)
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, h, ht = ctx.saved_tensors
        do = torch.zeros_like(v) if do is None else do
        dq, dk, dv, dg, dh0 = _backward(
            q, k, v, g, h, ht, do.contiguous(), None if dht is None else dht.contiguous(), ctx.scale
        )
        d_init = None
        if ctx.h0_meta is not None:
            shape, dtype = ctx.h0_meta
            d_init = (dh0.sum(0, keepdim=True) if shape[0] == 1 else dh0).to(dtype)
        return dq, dk, dv, dg, d_init, None, None


@torch.compiler.disable
def gla_chunked_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked GLA through the Triton kernels (torch.compile traces around this call).

    Shapes:
        q, k, g: [B, T, H, K] (K <= 256); v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] (q's dtype) and the final state [B, H, K, V] float32 (or None).
    """
    _check(q, k, v, g, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"gla (triton): scale must be finite, got {scale}")
    if q.shape[1] == 0:
        raise ValueError("gla (triton): empty sequence (T = 0)")
    o, ht = _ChunkGLAFunction.apply(q, k, v, g, initial_state, scale, output_final_state)
    return o, (ht if output_final_state else None)

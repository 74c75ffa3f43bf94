"""Chunked GLA in Triton, host side (launches and the autograd Function), structured as fla's chunk_gla:
`gla_chunked_triton` (with its kernel modules, the only code here that imports triton; same contract as
`reference.gla_chunked_torch`, fla's layout).

q, k, g: [B, T, H, K]; v: [B, T, H, V]; g = log-space forget gates (<= 0); initial_state [B or 1, H, K, V];
returns o [B, T, H, V] in q's dtype and, with output_final_state, the final state [B, H, K, V] float32.
Gradients flow to q, k, v, g and initial_state. K <= KERNEL_MAX_K (module.py); V any size; T any length.

Design (chunks of C = 64, sub-chunks of S = 16): the intra-chunk map is built once per pass, then the
parallel kernels are matmuls over it.
    forward:  cumsum (gcs = chunk-local cumsum of g, fp32), fwd_h (states h entering each chunk),
              fwd_a + fwd_a_diag (A [B*H, NT, C, C] fp32, scale folded in: off-diagonal sub-chunk blocks as
              tensor-core products, diagonal 16 x 16 blocks row by row in small programs, as fla splits them),
              fwd_o (o = (q e^gcs) h + A v).
              Saved: q, k, v, g, gcs, A, h (input dtype), ht.
    backward: bwd_dh (state gradients), bwd_da (dA = scale do v^T, lower triangle), bwd_dv
              (A^T do + (k e^{b_C - b}) dh), bwd_intra (dq, dk from dA, fp32), bwd_inter (+ do h^T, v dh^T,
              and dg: in-chunk reverse cumsum of q dq - k dk plus dL/d(chunk decay); no cross-chunk pass).
Kernels: `kernels_fwd.py` (cumsum, fwd_h, fwd_a, fwd_a_diag, fwd_o), `kernels_bwd.py` (bwd_dh, bwd_da, bwd_dv,
bwd_intra, bwd_inter), their shared jit helpers in `kernels_common.py`.
All exponents are <= 0 (sub-chunk reference rows; the 16 x 16 diagonal blocks row by row); the parallel kernels
read every decay from gcs, the state passes scan g themselves.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from common.attention.dispatch import interpreting
from common.attention.gla import kernels_bwd, kernels_fwd
from common.attention.gla.module import KERNEL_DTYPES, KERNEL_MAX_K

CHUNK, SUB = 64, 16
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def _pow2(n: int, low: int = 16) -> int:
    return max(low, triton.next_power_of_2(n))


def _dot_dtype(dtype: torch.dtype):
    """(operand dtype, precision) of the kernels' dots: the input dtype; fp32 as "tf32x3" on a GPU (plain
    "ieee" dots were no more exact for dg at strong gates on the H200); under the CPU interpreter (whose
    bf16/fp16 tl.dot is wrong, triton 3.8) "emulate": operands rounded to the input dtype and multiplied in
    float32, the GPU's numbers."""
    if interpreting():
        return _TL_DTYPES[dtype], "emulate"
    if dtype == torch.float32:
        return tl.float32, "tf32x3"
    return _TL_DTYPES[dtype], "tf32"


# (num_warps, num_stages) per kernel, fixed (no autotuning: GPU time is scarce). Chosen on the H200
# (benchmarks/gla_profile.py sweep, B4-T2048-H16-D128 and B8-T2048-H32-D256, 2026-11-29): fwd_a, bwd_dv and
# bwd_inter at 4 warps beat 8 by 4-9% (ptxas predicts some spills for 64 x 64 tiles at 4 warps; the
# measured time wins); the rest as first compiled.
LAUNCH = dict(
    cumsum=(4, 1),
    fwd_h=(4, 2),
    fwd_a=(4, 1),
    fwd_a_diag=(4, 1),
    fwd_o=(8, 2),
    bwd_dh=(4, 2),
    bwd_da=(8, 2),
    bwd_dv=(4, 3),
    bwd_intra=(4, 1),
    bwd_inter=(4, 2),
)


def _launch(name: str) -> dict:
    warps, stages = LAUNCH[name]
    return dict(num_warps=warps, num_stages=stages)


def _fine_prec(dtype: torch.dtype) -> str:
    """Precision of the products with the intra-chunk maps A and dA (float32 operands): tf32 for bf16/fp16
    inputs, as fla does (bf16 there costs dg its in-chunk cancellation), "tf32x3" for fp32; the interpreter
    emulates both ("emulate_tf32" truncates the operands to tf32)."""
    if interpreting():
        return "emulate" if dtype == torch.float32 else "emulate_tf32"
    return "tf32x3" if dtype == torch.float32 else "tf32"


def _blocks(k_dim: int, v_dim: int, dtype: torch.dtype) -> dict:
    """Fixed launch blocks keyed on the head dims (no autotuning). The parallel kernels take K and V in
    blocks of at most 64 (a loop inside where a kernel needs the whole dim), so registers stay bounded at
    K = V = 256 and D = 128 gives 2 V-block programs per chunk in fwd_o / bwd_dv, 2 K-block programs in
    bwd_inter; float32 (exact "tf32x3" dots, a testing path) takes blocks of 32, where 64 spills. fwd_a
    (BK_A) takes K <= 128 whole (7% faster at D = 128 on the H200), 64 above. The state passes take <= 64."""
    wide = 32 if dtype == torch.float32 else 64
    return dict(
        BK=min(_pow2(k_dim), wide),
        BV=min(_pow2(v_dim), wide),
        BK_H=min(_pow2(k_dim), 64),
        BV_H=min(_pow2(v_dim), 64),
        BK_A=min(_pow2(k_dim), wide if dtype == torch.float32 or k_dim > 128 else 128),
        BK_D=min(_pow2(k_dim), 64),
    )


def _check(q, k, v, g, initial_state) -> None:
    """Clear errors for what the kernels do not take (shape, dtype, device)."""
    if q.dim() != 4 or q.shape != k.shape or q.shape != g.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            "gla (triton): expected q, k, g [B, T, H, K] and v [B, T, H, V]; got "
            f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}"
        )
    for name, t in (("q", q), ("k", k), ("v", v), ("g", g)):
        if t.dtype not in KERNEL_DTYPES:
            raise TypeError(f"gla (triton): {name} has dtype {t.dtype}; expected float32, bfloat16 or float16")
        if t.device != q.device:
            raise ValueError(f"gla (triton): {name} is on {t.device}, q on {q.device}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"gla (triton): q, k, v must share a dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    b, _, h, dk = q.shape
    if dk > KERNEL_MAX_K:
        raise ValueError(f"gla (triton): key dim K={dk} > {KERNEL_MAX_K}; use impl='torch'")
    if initial_state is not None:
        shape = tuple(initial_state.shape)
        if initial_state.dim() != 4 or shape[0] not in (1, b) or shape[1:] != (h, dk, v.shape[-1]):
            raise ValueError(f"gla (triton): initial_state {shape}; expected [{b} or 1, {h}, {dk}, {v.shape[-1]}]")
        if initial_state.device != q.device:
            raise ValueError(f"gla (triton): initial_state is on {initial_state.device}, q on {q.device}")


def _dims(q: torch.Tensor, v: torch.Tensor) -> dict:
    """Compile-time arguments of every kernel here: heads, key/value widths, chunk, dot dtype/precision."""
    dt, prec = _dot_dtype(q.dtype)
    return dict(H=q.shape[2], K=q.shape[3], V=v.shape[-1], C=CHUNK, DT=dt, PREC=prec)


def _forward(q, k, v, g, h0, scale):
    """Returns o [B, T, H, V]; gcs [B, T, H, K] fp32; A [B*H, NT, C, C] fp32; h [B, H, NT, K, V]; ht fp32."""
    b, t, nh, dk = q.shape
    dv = v.shape[-1]
    nt = triton.cdiv(t, CHUNK)
    blk = _blocks(dk, dv, q.dtype)
    dims = _dims(q, v)
    gcs = g.new_empty(g.shape, dtype=torch.float32)
    kernels_fwd.cumsum_kernel[(triton.cdiv(dk, blk["BK"]), nt, b * nh)](
        g, gcs, t, H=nh, K=dk, C=CHUNK, BK=blk["BK"], **_launch("cumsum")
    )
    h = q.new_empty(b, nh, nt, dk, dv)
    ht = q.new_empty(b, nh, dk, dv, dtype=torch.float32)
    h0_arg = h0 if h0 is not None else ht  # never read without HAS_H0
    h0_bstride = 0 if h0 is None or h0.shape[0] == 1 else nh * dk * dv
    kernels_fwd.fwd_h_kernel[(triton.cdiv(dk, blk["BK_H"]), triton.cdiv(dv, blk["BV_H"]), b * nh)](
        k, v, g, h0_arg, h, ht, t, nt, h0_bstride, **dims, BK=blk["BK_H"], BV=blk["BV_H"], HAS_H0=h0 is not None,
        **_launch("fwd_h"),
    )  # fmt: skip
    a = q.new_empty(b * nh, nt, CHUNK, CHUNK, dtype=torch.float32)
    a_args = (q, k, gcs, a, scale, t, nt)
    a_dims = dict(H=nh, K=dk, C=CHUNK, S=SUB)
    kernels_fwd.fwd_a_kernel[(CHUNK // SUB, nt, b * nh)](
        *a_args, **a_dims, BK=blk["BK_A"], PREC_FINE=_fine_prec(q.dtype), **_launch("fwd_a")
    )
    kernels_fwd.fwd_a_diag_kernel[(CHUNK // SUB, nt, b * nh)](
        *a_args, **a_dims, BK=blk["BK_D"], **_launch("fwd_a_diag")
    )
    o = v.new_empty(b, t, nh, dv)
    kernels_fwd.fwd_o_kernel[(triton.cdiv(dv, blk["BV"]), nt, b * nh)](
        q, v, gcs, h, a, o, scale, t, nt, **dims, BK=blk["BK"], BV=blk["BV"], **_launch("fwd_o")
    )
    return o, gcs, a, h, ht


def _backward(q, k, v, g, gcs, a, h, do, dht, scale):
    """Returns dq, dk, dv, dg (input dtypes) and dh0 [B, H, K, V] fp32."""
    b, t, nh, dk = q.shape
    dv_dim = v.shape[-1]
    nt = triton.cdiv(t, CHUNK)
    blk = _blocks(dk, dv_dim, q.dtype)
    dims = _dims(q, v)
    dh = q.new_empty(b, nh, nt, dk, dv_dim)
    dh0 = q.new_empty(b, nh, dk, dv_dim, dtype=torch.float32)
    kernels_bwd.bwd_dh_kernel[(triton.cdiv(dk, blk["BK_H"]), triton.cdiv(dv_dim, blk["BV_H"]), b * nh)](
        q, g, do, dht if dht is not None else dh0, dh, dh0, scale, t, nt, **dims, BK=blk["BK_H"], BV=blk["BV_H"],
        HAS_DHT=dht is not None, **_launch("bwd_dh"),
    )  # fmt: skip
    da = q.new_empty(b * nh, nt, CHUNK, CHUNK, dtype=torch.float32)
    kernels_bwd.bwd_da_kernel[(nt, b * nh)](
        v, do, da, scale, t, nt, H=nh, V=dv_dim, C=CHUNK, BV=blk["BV"], DT=dims["DT"], PREC=dims["PREC"],
        **_launch("bwd_da"),
    )  # fmt: skip
    dv = torch.empty_like(v)
    kernels_bwd.bwd_dv_kernel[(triton.cdiv(dv_dim, blk["BV"]), nt, b * nh)](
        k, gcs, do, dh, a, dv, t, nt, **dims, BK=blk["BK"], BV=blk["BV"], PREC_FINE=_fine_prec(q.dtype),
        **_launch("bwd_dv"),
    )  # fmt: skip
    dq_intra = q.new_empty(q.shape, dtype=torch.float32)
    dk_intra = q.new_empty(q.shape, dtype=torch.float32)
    nc = CHUNK // SUB
    kernels_bwd.bwd_intra_kernel[(triton.cdiv(dk, blk["BK"]) * nc, nt, b * nh)](
        q, k, gcs, da, dq_intra, dk_intra, t, nt, H=nh, K=dk, C=CHUNK, S=SUB, NC=nc, BK=blk["BK"],
        PREC_FINE=_fine_prec(q.dtype), **_launch("bwd_intra"),
    )  # fmt: skip
    dq, dk_, dg = torch.empty_like(q), torch.empty_like(k), torch.empty_like(g)
    kernels_bwd.bwd_inter_kernel[(triton.cdiv(dk, blk["BK"]), nt, b * nh)](
        q, k, v, gcs, h, do, dh, dq_intra, dk_intra, dq, dk_, dg, scale, t, nt, **dims, BK=blk["BK"],
        BV=blk["BV"], **_launch("bwd_inter"),
    )  # fmt: skip
    return dq, dk_, dv, dg, dh0


@torch.library.custom_op("manyheads::gla_chunked_forward", mutates_args=())
def _forward_op(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, initial_state: torch.Tensor | None, scale: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(o, gcs, A, h, ht) of `_forward`: the output, what the backward reads, and the final state."""
    q, k, v, g = (x.contiguous() for x in (q, k, v, g))
    return _forward(q, k, v, g, None if initial_state is None else initial_state.contiguous(), scale)


@_forward_op.register_fake
def _(q, k, v, g, initial_state, scale):
    b, t, nh, dk = q.shape
    dv, nt = v.shape[-1], (t + CHUNK - 1) // CHUNK
    f32 = torch.float32
    return (
        v.new_empty(b, t, nh, dv),
        g.new_empty(g.shape, dtype=f32),
        q.new_empty(b * nh, nt, CHUNK, CHUNK, dtype=f32),
        q.new_empty(b, nh, nt, dk, dv),
        q.new_empty(b, nh, dk, dv, dtype=f32),
    )


@torch.library.custom_op("manyheads::gla_chunked_backward", mutates_args=())
def _backward_op(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    gcs: torch.Tensor,
    a: torch.Tensor,
    h: torch.Tensor,
    do: torch.Tensor,
    dht: torch.Tensor | None,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dq, dk, dv, dg, dh0) of `_backward`."""
    q, k, v, g, do = (x.contiguous() for x in (q, k, v, g, do))
    return _backward(q, k, v, g, gcs, a, h, do, None if dht is None else dht.contiguous(), scale)


@_backward_op.register_fake
def _(q, k, v, g, gcs, a, h, do, dht, scale):
    b, _, nh, dk = q.shape
    dh0 = q.new_empty(b, nh, dk, v.shape[-1], dtype=torch.float32)
    return torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(g), dh0


def _setup_context(ctx, inputs, output):
    q, k, v, g, initial_state, scale = inputs
    _, gcs, a, h, _ = output
    ctx.set_materialize_grads(False)  # an unused final state gives dht = None, not a zeros tensor
    ctx.save_for_backward(q, k, v, g, gcs, a, h)
    ctx.scale = scale
    ctx.h0_meta = None if initial_state is None else (initial_state.shape, initial_state.dtype)


def _autograd_backward(ctx, do, _dgcs, _da, _dh, dht):
    q, k, v, g, gcs, a, h = ctx.saved_tensors
    do = torch.zeros_like(v) if do is None else do
    dq, dk, dv, dg, dh0 = _backward_op(q, k, v, g, gcs, a, h, do, dht, ctx.scale)
    d_init = None
    if ctx.h0_meta is not None:
        shape, dtype = ctx.h0_meta
        d_init = (dh0.sum(0, keepdim=True) if shape[0] == 1 else dh0).to(dtype)
    return dq, dk, dv, dg, d_init, None


_forward_op.register_autograd(_autograd_backward, setup_context=_setup_context)


def gla_chunked_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked GLA through the Triton kernels, the custom ops `manyheads::gla_chunked_forward` / `_backward` (fake
    implementations and autograd registered: torch.compile captures them in its graph).

    Shapes:
        q, k, g: [B, T, H, K] (K <= KERNEL_MAX_K); v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] (q's dtype) and the final state [B, H, K, V] float32 (or None).
    """
    _check(q, k, v, g, initial_state)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"gla (triton): scale must be finite, got {scale}")
    if q.shape[1] == 0:
        raise ValueError("gla (triton): empty sequence (T = 0)")
    o, _, _, _, ht = _forward_op(q, k, v, g, initial_state, scale)
    return o, (ht if output_final_state else None)

"""Bi-level routing attention fused in Triton, host side: launches and the autograd Function.

The routed keys/values are read in place, never gathered (the kernels and their design: `kernels.py`).
Routing (region sums, affinity, top-k) is tiny (S^2 x S^2 per image) and stays in torch, undifferentiated
as in the reference: `route_regions(..., fp32=True)`, the reference's ranking computed in fp32 in a handful
of launches, so in bf16/fp16 the routes are those of the fp32 reference on the same values (up to fp32
rounding: a near-tie between the k-th and (k+1)-th region at 1e-7 could still flip). The backward adds dK/dV
into one fp32 buffer of the size of K and V together.

Layout: q, k [B, H, W, Cqk], v [B, H, W, Cv], channel-last with unit channel stride (other strides are
free, so the column slices of a fused qkv projection need no copy); heads split the channels as
[heads, head_dim], as in the reference.

This module imports triton at import time; `common.attention.routing_bilevel` imports it only when the
Triton implementation is asked for, so the package works without triton.
"""

from __future__ import annotations

import contextlib
import math

import torch
import triton

from common.attention.dispatch import interpreting
from common.attention.routing_bilevel.kernels import bra_bwd_kernel, bra_fwd_kernel
from common.attention.routing_bilevel.module import KERNEL_DTYPES, KERNEL_MAX_HEAD_DIM
from common.attention.routing_bilevel.reference import route_regions

LOG2E = 1.4426950408889634


def _channel_last(t: torch.Tensor) -> torch.Tensor:
    """A view with unit channel stride (copied only when the channels are strided)."""
    return t if t.stride(-1) == 1 else t.contiguous()


def _strides(*tensors: torch.Tensor) -> list[int]:
    """Batch, row and column strides of each [B, H, W, C] map, flat (the kernels' stride arguments)."""
    return [stride for t in tensors for stride in t.stride()[:3]]


def _on_device(t: torch.Tensor):
    """Launch on the tensors' GPU (Triton launches on the current device), a no-op on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _config(n_win: int, rh: int, rw: int, topk: int, dq: int, dv: int, dtype: torch.dtype) -> dict:
    """Tile sizes (powers of two, >= 16 for tl.dot) and constexprs shared by the two kernels."""
    pixels = rh * rw
    block_m = min(64, max(16, triton.next_power_of_2(pixels)))
    block_n = min(64, max(16, triton.next_power_of_2(topk * pixels)))
    return dict(
        N_WIN=n_win,
        RH=rh,
        RW=rw,
        TOPK=topk,
        DQ=dq,
        DV=dv,
        M_BLOCKS=triton.cdiv(pixels, block_m),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_DQ=max(16, triton.next_power_of_2(dq)),
        BLOCK_DV=max(16, triton.next_power_of_2(dv)),
        PREC="ieee" if dtype == torch.float32 else "tf32",  # fp32 inputs: no TF32 rounding
        DOT_F32=interpreting(),
    )


def launch_forward(q, k, v, o, lse, route, num_heads: int, scale: float, cfg: dict) -> None:
    """The forward kernel over every (image, query region, query block, head): writes o and lse."""
    batch, height, width, _ = q.shape
    grid = (batch * cfg["N_WIN"] ** 2 * cfg["M_BLOCKS"], num_heads)
    with _on_device(q):
        bra_fwd_kernel[grid](
            *(q, k, v, o, lse, route),
            *_strides(q, k, v, o),
            *(height, width, num_heads, scale * LOG2E),
            **cfg,
            num_warps=4,
        )


def _forward_impl(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, route: torch.Tensor, num_heads: int, n_win: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(o [B, H, W, Cv] in q's dtype, lse [B, heads, H, W] fp32) for the routed regions `route`."""
    batch, height, width, qk_dim = q.shape
    v_dim, topk = v.shape[-1], route.shape[-1]
    q, k, v = _channel_last(q), _channel_last(k), _channel_last(v)
    rh, rw = -(-height // n_win), -(-width // n_win)
    cfg = _config(n_win, rh, rw, topk, qk_dim // num_heads, v_dim // num_heads, q.dtype)
    o = torch.empty(batch, height, width, v_dim, dtype=q.dtype, device=q.device)
    lse = torch.empty(batch, num_heads, height, width, dtype=torch.float32, device=q.device)
    launch_forward(q, k, v, o, lse, route, num_heads, scale, cfg)
    return o, lse


_forward = torch.library.custom_op("manyheads::routing_bilevel_forward", _forward_impl, mutates_args=())


@_forward.register_fake
def _(q, k, v, route, num_heads, n_win, scale):
    batch, height, width, _ = q.shape
    o = q.new_empty(batch, height, width, v.shape[-1])
    return o, q.new_empty(batch, num_heads, height, width, dtype=torch.float32)


def _backward_impl(
    do: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    o: torch.Tensor,
    lse: torch.Tensor,
    route: torch.Tensor,
    num_heads: int,
    n_win: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dq, dkv): dkv is dK then dV flattened into one buffer in k's dtype (a custom op's outputs may not alias
    each other; the caller views the two halves)."""
    batch, height, width, qk_dim = q.shape
    topk = route.shape[-1]
    q, k, v, o, do = (_channel_last(t) for t in (q, k, v, o, do))
    rh, rw = -(-height // n_win), -(-width // n_win)
    cfg = _config(n_win, rh, rw, topk, qk_dim // num_heads, v.shape[-1] // num_heads, q.dtype)
    dq = torch.empty(batch, height, width, qk_dim, dtype=q.dtype, device=q.device)
    # dk and dv: the two halves of one zeroed fp32 buffer (one fill, one cast: the host's cost per launch
    # is what bounds this op at BiFormer's shapes)
    dkv = torch.zeros(batch * height * width * (qk_dim + v.shape[-1]), dtype=torch.float32, device=q.device)
    dk, dv = _halves(dkv, q.shape, v.shape)
    grid = (batch * cfg["N_WIN"] ** 2 * cfg["M_BLOCKS"], num_heads)
    with _on_device(q):
        bra_bwd_kernel[grid](
            *(q, k, v, o, do, lse, route, dq, dk, dv),
            *_strides(q, k, v, o, do),
            *(height, width, num_heads, scale, scale * LOG2E),
            **cfg,
            num_warps=4,
        )
    return dq, dkv.to(k.dtype)  # back to the input dtype (a copy in fp32 too: outputs may not alias)


_backward = torch.library.custom_op("manyheads::routing_bilevel_backward", _backward_impl, mutates_args=())


@_backward.register_fake
def _(do, q, k, v, o, lse, route, num_heads, n_win, scale):
    return torch.empty_like(q), k.new_empty(q.numel() + v.numel())


def _halves(buf: torch.Tensor, q_shape, v_shape) -> tuple[torch.Tensor, torch.Tensor]:
    """dK [B, H, W, Cqk] and dV [B, H, W, Cv] as views of one flat buffer."""
    n = math.prod(q_shape)
    return buf[:n].view(q_shape), buf[n:].view(*q_shape[:3], v_shape[-1])


def _setup_context(ctx, inputs, output):
    q, k, v, route, num_heads, n_win, scale = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse, route)
    ctx.num_heads, ctx.n_win, ctx.scale = num_heads, n_win, scale


def _autograd_backward(ctx, do, _dlse, backward=_backward):
    q, k, v, o, lse, route = ctx.saved_tensors
    dq, dkv = backward(do, q, k, v, o, lse, route, ctx.num_heads, ctx.n_win, ctx.scale)
    return dq, *_halves(dkv, q.shape, v.shape), None, None, None, None


_forward.register_autograd(_autograd_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The custom ops' forward and backward called directly, for eager mode: the dispatcher's checks and
    wrappers around a custom op cost host time per call (`benchmarks/routing_host.py` measures both paths),
    and at BiFormer's batch-64 shapes the host, not the GPU, bounds this op. torch.compile takes the ops."""

    @staticmethod
    def forward(ctx, q, k, v, route, num_heads: int, n_win: int, scale: float):
        o, lse = _forward_impl(q, k, v, route, num_heads, n_win, scale)
        _setup_context(ctx, (q, k, v, route, num_heads, n_win, scale), (o, lse))
        ctx.mark_non_differentiable(lse)
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        return _autograd_backward(ctx, do, dlse, backward=_backward_impl)


def routed_attention(q, k, v, route, num_heads: int, n_win: int, scale: float, dispatcher: bool = False):
    """(o, lse) of the kernels: through the custom op when compiling (or `dispatcher`), directly when eager."""
    if dispatcher or torch.compiler.is_compiling():
        return _forward(q, k, v, route, num_heads, n_win, scale)
    return _Eager.apply(q, k, v, route, num_heads, n_win, scale)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, n_win: int, topk: int) -> None:
    if q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k [B, H, W, Cqk] and v [B, H, W, Cv] (channel-last maps), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in KERNEL_DTYPES:
        raise ValueError(f"q, k, v must share one dtype of {KERNEL_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if num_heads < 1 or q.shape[-1] % num_heads or v.shape[-1] % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide Cqk={q.shape[-1]} and Cv={v.shape[-1]}")
    head_dims = (q.shape[-1] // num_heads, v.shape[-1] // num_heads)
    if max(head_dims) > KERNEL_MAX_HEAD_DIM:
        raise ValueError(f"head dims {head_dims} exceed the kernel's {KERNEL_MAX_HEAD_DIM}; use impl='torch'")
    if n_win < 1:
        raise ValueError(f"n_win must be >= 1, got {n_win}")
    if not 1 <= topk <= n_win * n_win:
        raise ValueError(f"topk must be in [1, {n_win * n_win}] for n_win={n_win}, got {topk}")
    per_image = max(max(t.stride(0), math.prod(t.shape[1:])) for t in (q, k, v))
    if per_image >= 2**31:  # the kernels offset images in int64, tokens inside an image in int32
        raise ValueError(f"one image spans {per_image} elements, over the kernel's int32 offsets; use impl='torch'")


def bilevel_routing_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_heads: int,
    n_win: int,
    topk: int,
    scale: float | None = None,
) -> torch.Tensor:
    """Bi-level routing attention core, fused Triton kernels (forward and backward).

    Same arguments and semantics as `bilevel_routing_attention_torch` (padding for H, W not divisible by
    `n_win`, scale default Cqk ** -0.5, routing not differentiated), except that routing runs in fp32.
    fp16/bf16/fp32 inputs, fp32 accumulation; the output has the input dtype.

    The routing is torch; the kernels are the custom ops `manyheads::routing_bilevel_forward` / `_backward` (fake
    implementations and autograd registered), so torch.compile captures the whole call in its graph; eager calls
    run the same functions without the dispatcher (`_Eager`).

    Shapes:
        q, k: [B, H, W, Cqk]; v: [B, H, W, Cv]; returns [B, H, W, Cv].
    """
    _check(q, k, v, num_heads, n_win, topk)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    route = route_regions(q, k, n_win, topk, scale, fp32=True)
    return routed_attention(q, k, v, route, num_heads, n_win, scale)[0]

"""Bi-level routing attention fused in Triton: the routed keys/values are read in place, never gathered.

Routing (region sums, affinity, top-k) is tiny (S^2 x S^2 per image) and stays in torch, undifferentiated
as in the reference (`route_regions`). Token attention is one Triton program per (image, query region, block of
the region's query pixels, head): it loads the queries once and walks the `topk * P` routed key tokens
(P = pixels per region) in tiles of BLOCK_N tokens, computing each token's map coordinates from the route
index by arithmetic, so K and V are read straight from the channel-last [B, H, W, C] maps. Packing the
routed regions' tokens into one key tile (token j is pixel j % P of routed region j // P) keeps tl.dot's
N dimension >= 16 even for BiFormer stage 3's 4-pixel regions (16 routed regions x 4 = one 64-key tile).
Online softmax in fp32 (base 2); the log-sum-exp is saved for the backward.

Backward: one program per forward program recomputes the probabilities from the saved log-sum-exp, keeps
dQ in registers and adds dK/dV into fp32 buffers with `tl.atomic_add`. Why atomics rather than a second
pass over the inverted route: a key region receives on average `topk` query regions (the fan-in of one
region in the route graph), so contention is low, while a second pass would recompute QK^T and the
probabilities a second time, need a sort/CSR of the inverted route per image and balance badly (one
popular region can be routed by all S^2 regions). The price: dK/dV summation order is not deterministic
(fp32, so only last-bit differences) and one fp32 buffer of the size of K and V together.

Routing precision: the region sums and affinities are computed in fp32 (the reference computes them in
the input dtype), so in bf16/fp16 the routes are those of the fp32 reference on the same values (up to
fp32 rounding: a near-tie between the k-th and (k+1)-th region at 1e-7 could still flip).

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
import torch.nn.functional as F
import triton
import triton.language as tl

from common.attention.dispatch import interpreting

LOG2E = 1.4426950408889634
MAX_HEAD_DIM = 256
DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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
def _bra_fwd_kernel(
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
def _bra_bwd_kernel(
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


def route_regions(q: torch.Tensor, k: torch.Tensor, n_win: int, topk: int, scale: float) -> torch.Tensor:
    """The reference's routing in fp32: region means over real tokens, affinity, regions made only of padding
    ranked last, top-k. Called in the autograd Function's forward, where nothing is recorded (routing is not
    differentiated, as in the reference).

    Top-k of a row ignores a positive factor on the row, so the affinity is taken between the query regions'
    token sums (not means) and the key regions' means, unscaled (a positive `scale` is such a factor); without
    padding every region has the same token count and the key sums serve too. Region sums are one fp32
    reduction over a [B, S, rh, S, rw, C] view (no region-major copy; zero padding adds nothing). This keeps the
    routing to a handful of launches, a fixed cost that dominated the kernel time at BiFormer's shapes
    (benchmarks/README.md). The ranking equals the reference's up to fp32 rounding; in bf16/fp16 the reference
    averages in the input dtype, we do not.

    Shapes:
        q, k: [B, H, W, Cqk]; returns route [B, S^2, topk] int64 (region ids, row-major).
    """
    batch, height, width, channels = q.shape
    rh, rw = -(-height // n_win), -(-width // n_win)
    pad_h, pad_w = rh * n_win - height, rw * n_win - width
    padded = pad_h > 0 or pad_w > 0

    def sums(t: torch.Tensor) -> torch.Tensor:
        if padded:
            t = F.pad(t, (0, 0, 0, pad_w, 0, pad_h))
        sums = t.view(batch, n_win, rh, n_win, rw, channels).sum(dim=(2, 4), dtype=torch.float32)
        return sums.view(batch, n_win * n_win, channels)

    keys = sums(k)
    if padded:
        rows = (torch.arange(rh * n_win, device=q.device) < height).view(n_win, rh).sum(1)  # real rows per region row
        cols = (torch.arange(rw * n_win, device=q.device) < width).view(n_win, rw).sum(1)
        count = (rows[:, None] * cols[None, :]).reshape(1, n_win * n_win, 1)  # real tokens per region
        keys = keys / count.clamp(min=1)
    affinity = sums(q) @ keys.transpose(-2, -1)  # [B, S^2, S^2] fp32, row i a positive multiple of the reference's
    if scale <= 0:
        affinity = affinity * scale
    if padded:
        affinity = affinity.masked_fill(count.view(1, 1, -1) == 0, float("-inf"))
    return affinity.topk(topk, dim=-1).indices


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
        _bra_fwd_kernel[grid](
            *(q, k, v, o, lse, route),
            *_strides(q, k, v, o),
            *(height, width, num_heads, scale * LOG2E),
            **cfg,
            num_warps=4,
        )


class _BiLevelRoutingAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, num_heads: int, n_win: int, topk: int, scale: float):
        batch, height, width, qk_dim = q.shape
        v_dim = v.shape[-1]
        q, k, v = _channel_last(q), _channel_last(k), _channel_last(v)
        route = route_regions(q, k, n_win, topk, scale)
        rh, rw = -(-height // n_win), -(-width // n_win)
        cfg = _config(n_win, rh, rw, topk, qk_dim // num_heads, v_dim // num_heads, q.dtype)
        o = torch.empty(batch, height, width, v_dim, dtype=q.dtype, device=q.device)
        lse = torch.empty(batch, num_heads, height, width, dtype=torch.float32, device=q.device)
        launch_forward(q, k, v, o, lse, route, num_heads, scale, cfg)
        ctx.save_for_backward(q, k, v, o, lse, route)
        ctx.num_heads, ctx.scale, ctx.cfg = num_heads, scale, cfg
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, route = ctx.saved_tensors
        cfg, num_heads, scale = ctx.cfg, ctx.num_heads, ctx.scale
        batch, height, width, qk_dim = q.shape
        do = _channel_last(do)
        dq = torch.empty(batch, height, width, qk_dim, dtype=q.dtype, device=q.device)
        # dk and dv: the two halves of one zeroed fp32 buffer (one fill, one cast: the host's cost per launch
        # is what bounds this op at BiFormer's shapes)
        dkv = torch.zeros(batch * height * width * (qk_dim + v.shape[-1]), dtype=torch.float32, device=q.device)

        def halves(buf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return buf[: q.numel()].view(q.shape), buf[q.numel() :].view(*q.shape[:3], v.shape[-1])

        dk, dv = halves(dkv)
        grid = (batch * cfg["N_WIN"] ** 2 * cfg["M_BLOCKS"], num_heads)
        with _on_device(q):
            _bra_bwd_kernel[grid](
                q,
                k,
                v,
                o,
                do,
                lse,
                route,
                dq,
                dk,
                dv,
                *_strides(q, k, v, o, do),
                height,
                width,
                num_heads,
                scale,
                scale * LOG2E,
                **cfg,
                num_warps=4,
            )
        return dq, *halves(dkv.to(k.dtype)), None, None, None, None  # back to the input dtype (a no-op in fp32)


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int, n_win: int, topk: int) -> None:
    if q.ndim != 4 or k.shape != q.shape or v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"expected q, k [B, H, W, Cqk] and v [B, H, W, Cv] (channel-last maps), got q {tuple(q.shape)}, "
            f"k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in DTYPES:
        raise ValueError(f"q, k, v must share one dtype of {DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if num_heads < 1 or q.shape[-1] % num_heads or v.shape[-1] % num_heads:
        raise ValueError(f"num_heads={num_heads} must divide Cqk={q.shape[-1]} and Cv={v.shape[-1]}")
    head_dims = (q.shape[-1] // num_heads, v.shape[-1] // num_heads)
    if max(head_dims) > MAX_HEAD_DIM:
        raise ValueError(f"head dims {head_dims} exceed the kernel's {MAX_HEAD_DIM}; use impl='torch'")
    if n_win < 1:
        raise ValueError(f"n_win must be >= 1, got {n_win}")
    if not 1 <= topk <= n_win * n_win:
        raise ValueError(f"topk must be in [1, {n_win * n_win}] for n_win={n_win}, got {topk}")
    per_image = max(max(t.stride(0), math.prod(t.shape[1:])) for t in (q, k, v))
    if per_image >= 2**31:  # the kernels offset images in int64, tokens inside an image in int32
        raise ValueError(f"one image spans {per_image} elements, over the kernel's int32 offsets; use impl='torch'")


@torch.compiler.disable
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

    Shapes:
        q, k: [B, H, W, Cqk]; v: [B, H, W, Cv]; returns [B, H, W, Cv].
    """
    _check(q, k, v, num_heads, n_win, topk)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale must be finite, got {scale}")
    return _BiLevelRoutingAttention.apply(q, k, v, num_heads, n_win, topk, scale)

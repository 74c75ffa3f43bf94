"""Gated linear attention, functional forms in plain PyTorch (the references a Triton kernel sits beside).

Layout (fla's): q, k, g: [B, T, H, K]; v: [B, T, H, V]; states: [B, H, K, V]. `g` holds the forget gates in
log space (g <= 0, decay = exp(g)), per token, head and key channel. The recurrence, per head:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          (S: K x V, S_0 = initial_state or 0)
    o_t = (scale * q_t) S_t

Three forms compute it with the same result: `gla_parallel_torch` (the T x T map with pairwise decays),
`gla_chunked_torch` (the paper's chunkwise form: exact within chunks, the state carried between them) and
`gla_recurrent_torch` (token by token). Each returns `(o, final_state)`, final_state None unless
`output_final_state=True`. Computation runs in float32 at least; `o` comes back in q's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.attention.dispatch import IMPLS, resolve_impl
from common.errors import ConfigError, check_choice, check_range

GLA_MODES = ("parallel", "chunked", "recurrent")
TRITON_MAX_K = 256  # the kernel keeps the whole key dim in one block
TRITON_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _kernel_supports(q: torch.Tensor, v: torch.Tensor, initial_state: torch.Tensor | None) -> bool:
    """What impl="auto" checks before picking the kernel (an explicit impl="triton" raises instead)."""
    dtypes_ok = q.dtype in TRITON_DTYPES and v.dtype == q.dtype
    return dtypes_ok and q.shape[-1] <= TRITON_MAX_K and q.shape[1] > 0


def gla_chunked_dispatch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    impl: str,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Chunked GLA through the Triton kernel when `impl` resolves to "triton", else `gla_chunked_torch`.

    "auto" also stays on torch for inputs the kernel does not take (float64, K > 256, T = 0); the kernel
    ignores `chunk_size` (it uses 64) and returns the final state in float32. Shapes as `gla_chunked_torch`.
    """
    resolved = resolve_impl("gla", impl, q, k, v, g, initial_state)
    if resolved == "triton" and (impl == "triton" or _kernel_supports(q, v, initial_state)):
        from common.attention.gla.triton import gla_chunked_triton  # imports triton

        return gla_chunked_triton(
            q, k, v, g, scale=scale, initial_state=initial_state, output_final_state=output_final_state
        )
    return gla_chunked_torch(
        q,
        k,
        v,
        g,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        chunk_size=chunk_size,
    )


def _to_heads_first(q, k, v, g, scale, initial_state):
    """Check shapes, scale q, move to [B, H, T, D] in the compute dtype, broadcast the initial state."""
    if q.shape != k.shape or q.shape != g.shape or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"gla: expected q, k, g [B, T, H, K] and v [B, T, H, V]; got q {tuple(q.shape)}, k {tuple(k.shape)}, "
            f"v {tuple(v.shape)}, g {tuple(g.shape)}"
        )
    b, _, h, dk = q.shape
    dv = v.shape[-1]
    dtype = torch.promote_types(q.dtype, torch.float32)
    scale = dk**-0.5 if scale is None else scale
    q, k, v, g = (t.transpose(1, 2).to(dtype) for t in (q, k, v, g))
    q = q * scale
    state = q.new_zeros(b, h, dk, dv) if initial_state is None else initial_state.to(dtype).expand(b, h, dk, dv)
    return q, k, v, g, state


def gla_recurrent_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA token by token: O(T K V) time, O(K V) state; a Python loop (the decoding / state-tuning form).

    Shapes:
        q, k, g: [B, T, H, K]; v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] and the final state [B, H, K, V] (or None).
    """
    out_dtype = q.dtype
    q, k, v, g, state = _to_heads_first(q, k, v, g, scale, initial_state)
    outs = []
    for t in range(q.shape[2]):
        state = state * g[:, :, t, :, None].exp() + k[:, :, t, :, None] * v[:, :, t, None, :]
        outs.append((q[:, :, t, None, :] @ state)[:, :, 0])  # [B, H, V]
    o = torch.stack(outs, dim=2)
    return o.transpose(1, 2).to(out_dtype), (state if output_final_state else None)


def gla_parallel_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA as one masked T x T map: o_t = sum_{s<=t} (q_t * exp(G_t - G_s)) . k_s v_s + (q_t * exp(G_t)) S_0.

    G is the cumulative sum of g; the pairwise decays exp(G_t - G_s) (s <= t, so <= 1) are formed
    directly, which is stable but costs O(T^2 K) memory: the reference form, for short sequences.

    Shapes:
        q, k, g: [B, T, H, K]; v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] and the final state [B, H, K, V] (or None).
    """
    out_dtype = q.dtype
    q, k, v, g, state = _to_heads_first(q, k, v, g, scale, initial_state)
    t = q.shape[2]
    cum = g.cumsum(dim=2)  # G_t: [B, H, T, K]
    causal = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    log_decay = (cum[:, :, :, None, :] - cum[:, :, None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    attn = torch.einsum("bhtk,bhsk,bhtsk->bhts", q, k, log_decay.exp())  # [B, H, T, T]
    o = attn @ v + (q * cum.exp()) @ state
    final = None
    if output_final_state:
        last = cum[:, :, -1:, :]  # G_T: [B, H, 1, K]
        final = state * last.transpose(-2, -1).exp() + (k * (last - cum).exp()).transpose(-2, -1) @ v
    return o.transpose(1, 2).to(out_dtype), final


def gla_chunked_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    chunk_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GLA chunkwise (the paper's training form): per chunk, the exact intra-chunk map plus the carried state.

    Within a chunk, b_t = sum of g from the chunk start to t; the intra-chunk part uses pairwise decays
    exp(b_t - b_s) (s <= t) as `gla_parallel_torch` does, the inter-chunk part reads the state entering the
    chunk, (q_t * exp(b_t)) S, and the state is moved across the chunk as
    S <- diag(exp(b_C)) S + sum_s (k_s * exp(b_C - b_s))^T v_s. Every exponent is <= 0, so no overflow.
    T need not be a multiple of `chunk_size`: the tail is zero-padded (k = 0 and g = 0 leave S unchanged).
    O(T C K + T K V) time for chunk size C.

    Shapes:
        q, k, g: [B, T, H, K]; v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] and the final state [B, H, K, V] (or None).
    """
    check_range("chunk_size", chunk_size, 1)
    out_dtype = q.dtype
    q, k, v, g, state = _to_heads_first(q, k, v, g, scale, initial_state)
    t = q.shape[2]
    pad = (-t) % chunk_size
    if pad:
        q, k, v, g = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v, g))
    causal = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=q.device).tril()
    outs = []
    for start in range(0, t + pad, chunk_size):
        qc, kc, vc, gc = (x[:, :, start : start + chunk_size] for x in (q, k, v, g))
        b = gc.cumsum(dim=2)  # [B, H, C, K]
        log_decay = (b[:, :, :, None, :] - b[:, :, None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
        attn = torch.einsum("bhtk,bhsk,bhtsk->bhts", qc, kc, log_decay.exp())  # [B, H, C, C]
        outs.append(attn @ vc + (qc * b.exp()) @ state)
        last = b[:, :, -1:, :]  # [B, H, 1, K]
        state = state * last.transpose(-2, -1).exp() + (kc * (last - b).exp()).transpose(-2, -1) @ vc
    o = torch.cat(outs, dim=2)[:, :, :t]
    return o.transpose(1, 2).to(out_dtype), (state if output_final_state else None)


def gla(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: str = "chunked",
    chunk_size: int = 64,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Gated linear attention (causal), dispatching on `mode` and `impl`.

    Args:
        q, k, v: queries, keys, values; q is multiplied by `scale` (default K ** -0.5).
        g: log-space forget gates (<= 0), per token, head and key channel.
        initial_state: the state before the first token (default zeros); a batch of 1 broadcasts.
        output_final_state: also return the state after the last token.
        mode: "parallel", "chunked" or "recurrent" (same result).
        chunk_size: chunk length for "chunked" (torch only; the kernel uses 64, same result).
        impl: "auto" (the Triton kernel for mode="chunked" on CUDA tensors it supports, else torch),
            "torch", or "triton" (the kernel; mode must be "chunked", else ConfigError). See
            `common.attention.dispatch`.

    Shapes:
        q, k, g: [B, T, H, K]; v: [B, T, H, V]; initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] and the final state [B, H, K, V] (None unless output_final_state).
    """
    check_choice("impl", impl, IMPLS)
    check_choice("mode", mode, GLA_MODES)
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if mode == "chunked":
        return gla_chunked_dispatch(q, k, v, g, impl=impl, chunk_size=chunk_size, **kwargs)
    if impl == "triton":
        raise ConfigError("impl", impl, f"mode='chunked' for the Triton kernel (mode={mode!r} is torch only)")
    if mode == "parallel":
        return gla_parallel_torch(q, k, v, g, **kwargs)
    return gla_recurrent_torch(q, k, v, g, **kwargs)

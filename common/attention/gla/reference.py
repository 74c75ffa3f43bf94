"""Gated linear attention, functional forms in plain PyTorch (the references the Triton kernel must match).

Layout (fla's): q, k, g: [B, T, H, K]; v: [B, T, H, V]; states: [B, H, K, V]. `g` holds the forget gates in
log space (g <= 0, decay = exp(g)), per token, head and key channel. The recurrence, per head:

    S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t          (S: K x V, S_0 = initial_state or 0)
    o_t = (scale * q_t) S_t

Three forms compute it with the same result: `gla_parallel_torch` (the T x T map with pairwise decays),
`gla_chunked_torch` (the paper's chunkwise form: exact within chunks, the state carried between them) and
`gla_recurrent_torch` (token by token). Each returns `(o, final_state)`, final_state None unless
`output_final_state=True`. Computation runs in float32 at least; `o` comes back in q's dtype.
`common.attention.gla.gla` dispatches between them and the kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from common.errors import check_range


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

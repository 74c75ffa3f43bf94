"""Gated Linear Attention (Yang et al.): the layer and the dispatching op `gla` (torch forms or the Triton kernel)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.dispatch import IMPLS, resolve_impl
from common.attention.gla.reference import gla_chunked_torch, gla_parallel_torch, gla_recurrent_torch
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range

GLA_MODES = ("parallel", "chunked", "recurrent")
# what the Triton kernel takes (triton.py checks them; impl="auto" stays on torch outside them)
KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
KERNEL_MAX_K = 256  # largest key head dim K the kernels take


def _kernel_supports(q: torch.Tensor, v: torch.Tensor, initial_state: torch.Tensor | None) -> bool:
    """What impl="auto" checks before picking the kernel (an explicit impl="triton" raises instead)."""
    dtypes_ok = q.dtype in KERNEL_DTYPES and v.dtype == q.dtype
    return dtypes_ok and q.shape[-1] <= KERNEL_MAX_K and q.shape[1] > 0


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


class GatedLinearAttention(Mechanism):
    """Gated Linear Attention (GLA) token mixer, causal, with an optional initial state and final state out.

    Paper: Yang, Wang, Shen, Panda, Kim, "Gated Linear Attention Transformers with Hardware-Efficient
    Training" (ICML 2024, arXiv 2312.06635). Used by Lina-Speech (arXiv 2410.23320), whose initial-state
    tuning learns `state` and reads the final one.
    Cost: O(T K V / H) time and O(K V / H) state per sample (chunked or recurrent); "parallel" mode is
    O(T^2 K / H), the reference form.

    Per head (K = key_dim / H, V = value_dim / H channels):

        q, k = x W_q, x W_k;  v = x W_v
        g_t = logsigmoid(x_t W_g1 W_g2 + b_g) / tau        (log forget gate, low-rank W_g1 W_g2, tau = 16)
        S_t = diag(exp(g_t)) S_{t-1} + k_t^T v_t,  o_t = (q_t / sqrt(K)) S_t
        y = (RMSNorm(o) * swish(x W_r)) W_o

    The recurrence runs through `common.attention.gla.gla` (parallel / chunked / recurrent, same result).
    Choices where the paper leaves room, following fla and Lina-Speech: per-head RMSNorm before the output
    gate (the paper says LayerNorm per head), bias-free projections except the gate's, expand_k = 0.5 and
    expand_v = 1 by default (Lina-Speech uses 1 and 2). A key-padding mask sets k = 0 and g = 0 on masked
    tokens, so they neither write to nor decay the state: masked tokens change nothing. Causal only.

    Args:
        dim: model width C.
        num_heads: heads H; key_dim and value_dim must be divisible by it.
        expand_k: key_dim = dim * expand_k.
        expand_v: value_dim = dim * expand_v.
        gate_low_rank_dim: rank of the gate projection (16).
        gate_logit_normalizer: tau, dividing logsigmoid (16).
        mode: "chunked" (default), "parallel" or "recurrent".
        chunk_size: chunk length for "chunked".
        causal: must be True (the default); False raises ConfigError.
        norm_eps: RMSNorm epsilon.

    Shapes:
        x: [B, T, C]; mask: [B, T] bool (True = real token); state: [B or 1, H, K, V] (see `state_shape`).
        Output [B, T, C], and with `return_state=True` also the final state [B, H, K, V].
    """

    capabilities = Capabilities(
        paper="Gated Linear Attention Transformers with Hardware-Efficient Training "
        "(Yang et al., ICML 2024, arXiv 2312.06635)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        state=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        expand_k: float = 0.5,
        expand_v: float = 1.0,
        gate_low_rank_dim: int = 16,
        gate_logit_normalizer: float = 16.0,
        mode: str = "chunked",
        chunk_size: int = 64,
        causal: bool = True,
        norm_eps: float = 1e-5,
    ):
        key_dim, value_dim = int(dim * expand_k), int(dim * expand_v)
        super().__init__(num_heads, **{"dim * expand_k": key_dim, "dim * expand_v": value_dim})
        if not causal:
            raise ConfigError("causal", causal, "True: GLA is causal only")
        check_choice("mode", mode, GLA_MODES)
        check_range("chunk_size", chunk_size, 1)
        check_range("gate_logit_normalizer", gate_logit_normalizer, 0, low_inclusive=False)
        self.mode, self.chunk_size = mode, chunk_size
        self.head_k_dim, self.head_v_dim = key_dim // num_heads, value_dim // num_heads
        self.gate_logit_normalizer = gate_logit_normalizer
        self.q_proj = nn.Linear(dim, key_dim, bias=False)
        self.k_proj = nn.Linear(dim, key_dim, bias=False)
        self.v_proj = nn.Linear(dim, value_dim, bias=False)
        self.gk_proj = nn.Sequential(
            nn.Linear(dim, gate_low_rank_dim, bias=False), nn.Linear(gate_low_rank_dim, key_dim)
        )
        self.g_proj = nn.Linear(dim, value_dim, bias=False)  # output gate
        self.o_norm = nn.RMSNorm(self.head_v_dim, eps=norm_eps)
        self.o_proj = nn.Linear(value_dim, dim, bias=False)

    def state_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """Shape of the recurrent state: (batch_size, H, K, V)."""
        return (batch_size, self.num_heads, self.head_k_dim, self.head_v_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        state: torch.Tensor | None = None,
        return_state: bool = False,
        mode: str | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> [B, T, C] (and the final state [B, H, K, V] when `return_state`).

        `mode` overrides the layer's mode for this call (same result): a decoder trains chunked and
        generates one token at a time with "recurrent", which skips the chunk padding.
        """
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        g = F.logsigmoid(self.gk_proj(x)).unflatten(-1, (self.num_heads, -1)) / self.gate_logit_normalizer
        if mask is not None:  # masked tokens: no write (k = 0), no decay (g = 0)
            keep = mask.to(x.dtype)[:, :, None, None]
            k, g = k * keep, g * keep
        o, final = gla(
            q,
            k,
            v,
            g,
            initial_state=state,
            output_final_state=return_state,
            mode=mode or self.mode,
            chunk_size=self.chunk_size,
        )  # o: [B, T, H, V]
        o = self.o_norm(o) * F.silu(self.g_proj(x)).unflatten(-1, (self.num_heads, -1))
        out = self.o_proj(o.flatten(2))
        return (out, final) if return_state else out

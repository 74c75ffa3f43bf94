"""The Gated Linear Attention layer (Yang et al.): data-dependent per-channel forget gates, linear in T."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.gla.reference import GLA_MODES, gla
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range


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
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> [B, T, C] (and the final state [B, H, K, V] when `return_state`)."""
        q, k, v = (proj(x).unflatten(-1, (self.num_heads, -1)) for proj in (self.q_proj, self.k_proj, self.v_proj))
        g = F.logsigmoid(self.gk_proj(x)).unflatten(-1, (self.num_heads, -1)) / self.gate_logit_normalizer
        if mask is not None:  # masked tokens: no write (k = 0), no decay (g = 0)
            keep = mask.to(x.dtype)[:, :, None, None]
            k, g = k * keep, g * keep
        o, final = gla(
            q, k, v, g, initial_state=state, output_final_state=return_state, mode=self.mode, chunk_size=self.chunk_size
        )  # o: [B, T, H, V]
        o = self.o_norm(o) * F.silu(self.g_proj(x)).unflatten(-1, (self.num_heads, -1))
        out = self.o_proj(o.flatten(2))
        return (out, final) if return_state else out

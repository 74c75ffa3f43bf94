"""Lightning Attention-2: causal linear attention with a fixed per-head decay, computed in tiles.

It is gated linear attention with a constant gate: the functional forms (and the Triton kernel, through
`gla(..., impl=...)`) are `common.attention.gla`'s with g = -slope_h for every token and channel of head h;
`gla_chunked_torch` is exactly the Lightning-2 tiling (intra-block: the masked q k^T map with decay
lambda^(t-s); inter-block: the carried K x V state).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.gla import GLA_MODES, gla
from common.attention.registry import Capabilities
from common.errors import ConfigError, check_choice, check_range


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's geometric slopes, used by Lightning Attention / TransNormerLLM as per-head decay rates.

    Head h decays by lambda_h = exp(-slope_h) per token. For a power of two n, slopes are 2^(-8 i / n),
    i = 1..n; otherwise the power-of-two list for the largest 2^a < n plus every other slope of 2^(a+1).

    Shapes:
        Returns [num_heads] (float32, positive).
    """

    def power_of_two(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start**i for i in range(1, n + 1)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def lightning_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    slopes: torch.Tensor,
    *,
    scale: float = 1.0,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    mode: str = "chunked",
    chunk_size: int = 64,
    impl: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """o_t = sum_{s<=t} lambda_h^(t-s) (q_t . k_s) v_s (+ the decayed initial state), lambda_h = exp(-slope_h).

    `mode` "chunked" is Lightning Attention-2's intra/inter-block split; "parallel" and "recurrent" give the
    same result. No 1/sqrt(d) scale by default (`scale=1.0`, as TransNormerLLM). `impl` as `gla`'s: "auto"
    runs the chunked GLA Triton kernel (constant gate g = -slope_h) on CUDA tensors, "torch" the reference,
    "triton" forces the kernel (mode="chunked" only).

    Shapes:
        q, k: [B, T, H, K]; v: [B, T, H, V]; slopes: [H] (>= 0); initial_state: [B or 1, H, K, V].
        Returns o [B, T, H, V] and the final state [B, H, K, V] (None unless output_final_state).
    """
    g = (-slopes).to(q.dtype)[None, None, :, None].expand_as(q)
    return gla(
        q,
        k,
        v,
        g,
        scale=scale,
        initial_state=initial_state,
        output_final_state=output_final_state,
        mode=mode,
        chunk_size=chunk_size,
        impl=impl,
    )


class LightningAttention(Mechanism):
    """Lightning Attention-2 token mixer (TransNormerLLM's NormLinearAttention with per-head decay), causal.

    Paper: Qin, Sun, Li, Shen, Sun, Zhong, "Lightning Attention-2: A Free Lunch for Handling Unlimited
    Sequence Lengths in Large Language Models" (arXiv 2401.04658, 2024).
    Cost: O(T B_s d + T d^2) time per head for block size B_s (chunked), O(d^2) state; "parallel" mode is
    O(T^2 d), the reference form.

    Per head h (d = C/H):

        q, k = silu(x W_q), silu(x W_k);  v, u = x W_v, x W_u
        o_t = sum_{s<=t} lambda_h^(t-s) (q_t . k_s) v_s,   lambda_h = exp(-slope_h)  (fixed, not learned)
        y = (RMSNorm(o) * u) W_o          (RMSNorm over all heads' channels, no affine weight)

    The decay is a buffer: ALiBi slopes by default (as the lightning-attention package's
    `_build_slope_tensor`), or `slopes=` given per head (TransNormerLLM also scales them by depth,
    slope * (1 - l / (L - 1) + 1e-5) for layer l of L; pass that here). Choices where the paper leaves room,
    following TransNormerLLM: the swish feature map on q, k, the unscaled q.k, the normalised and
    u-gated output. A key-padding mask sets k = 0 and switches the decay off on masked tokens (TNL zeroes
    only v), so masked tokens change nothing. Causal only.

    Args:
        dim: model width C.
        num_heads: heads H; `dim` must be divisible by it.
        slopes: per-head decay rates (>= 0), default ALiBi slopes.
        mode: "chunked" (Lightning-2 tiling; default), "parallel" or "recurrent".
        chunk_size: block size for "chunked".
        causal: must be True (the default); False raises ConfigError.
        qkv_bias: bias in the q/k/v/u and output projections (TransNormerLLM: False).
        norm_eps: RMSNorm epsilon.

    Shapes:
        x: [B, T, C]; mask: [B, T] bool (True = real token); state: [B or 1, H, d, d].
        Output [B, T, C], and with `return_state=True` also the final state [B, H, d, d].
    """

    capabilities = Capabilities(
        paper="Lightning Attention-2: A Free Lunch for Handling Unlimited Sequence Lengths in Large Language "
        "Models (Qin et al., arXiv 2401.04658)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        state=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        slopes: list[float] | torch.Tensor | None = None,
        mode: str = "chunked",
        chunk_size: int = 64,
        causal: bool = True,
        qkv_bias: bool = False,
        norm_eps: float = 1e-5,
    ):
        super().__init__(num_heads, dim=dim)
        if not causal:
            raise ConfigError("causal", causal, "True: Lightning Attention is causal only")
        check_choice("mode", mode, GLA_MODES)
        check_range("chunk_size", chunk_size, 1)
        slopes = alibi_slopes(num_heads) if slopes is None else torch.as_tensor(slopes, dtype=torch.float32)
        if slopes.shape != (num_heads,) or bool((slopes < 0).any()):
            raise ConfigError("slopes", slopes.tolist(), f"{num_heads} non-negative decay rates, one per head")
        self.head_dim, self.mode, self.chunk_size = dim // num_heads, mode, chunk_size
        self.register_buffer("slopes", slopes)
        self.qkvu = nn.Linear(dim, 4 * dim, bias=qkv_bias)
        self.norm = nn.RMSNorm(dim, eps=norm_eps, elementwise_affine=False)
        self.out_proj = nn.Linear(dim, dim, bias=qkv_bias)

    def state_shape(self, batch_size: int = 1) -> tuple[int, int, int, int]:
        """Shape of the recurrent state: (batch_size, H, d, d)."""
        return (batch_size, self.num_heads, self.head_dim, self.head_dim)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        state: torch.Tensor | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: [B, T, C] -> [B, T, C] (and the final state [B, H, d, d] when `return_state`)."""
        q, k, v, u = self.qkvu(x).chunk(4, dim=-1)
        q, k, v = (t.unflatten(-1, (self.num_heads, -1)) for t in (F.silu(q), F.silu(k), v))  # [B, T, H, d]
        g = (-self.slopes).to(x.dtype)[None, None, :, None].expand_as(q)
        if mask is not None:  # masked tokens: no write (k = 0), no decay (g = 0)
            keep = mask.to(x.dtype)[:, :, None, None]
            k, g = k * keep, g * keep
        o, final = gla(
            q,
            k,
            v,
            g,
            scale=1.0,
            initial_state=state,
            output_final_state=return_state,
            mode=self.mode,
            chunk_size=self.chunk_size,
        )
        out = self.out_proj(self.norm(o.flatten(2)) * u)
        return (out, final) if return_state else out

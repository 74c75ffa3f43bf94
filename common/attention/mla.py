"""Multi-head latent attention (MLA): low-rank joint KV compression with decoupled rotary keys."""

from __future__ import annotations

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.attention.softmax import softmax_attention
from common.errors import ConfigError, check_range


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding, rotate-half convention. Shapes: x [..., N, R]; cos, sin [N, R]."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class MultiHeadLatentAttention(Mechanism):
    """Multi-head latent attention: keys and values decompressed from one small cached latent per token.

    Papers: "DeepSeek-V2: A Strong, Economical, and Efficient Mixture-of-Experts Language Model",
    DeepSeek-AI, arXiv 2405.04434 (MLA, Sec. 2.1); "TransMLA: Multi-head Latent Attention Is All You
    Need", Meng et al., arXiv 2502.07864 (MLA with full latent rank represents any MHA/GQA).

    Per token: latent `c = norm(W_dkv x)` of size `kv_rank` and one rotary key `k_r = RoPE(W_kr x)` of size
    `rope_dim` shared by all heads. Per head h: `k_h = [W_uk^h c, k_r]`, `v_h = W_uv^h c`,
    `q_h = [W_uq^h c_q, RoPE(W_qr^h c_q)]` with `c_q = norm(W_dq x)` when `q_rank` is set (else `c_q = x` and
    no norm). Softmax attention with scale `1/sqrt(head_dim + rope_dim)`.

    Two equal paths (`absorb=`): the naive one decompresses per-head keys and values and calls SDPA; the
    absorbed one (inference, KV-cache friendly) folds `W_uk^h` into the query and `W_uv^h` after the
    attention, so attention runs directly on the cached `[c, k_r]` (`kv_rank + rope_dim` numbers per token,
    shared by all heads, MQA-style): `q_h^T k_h = (W_uk^h^T q_nope_h)^T c + q_rope_h^T k_r`.

    Cache: `forward(..., state=cache, return_state=True)` takes and returns `(latent [B, T, kv_rank],
    rope_key [B, T, rope_dim])` with T the tokens seen so far; new tokens get positions T, T+1, ... and
    attend to the cache plus themselves (causally when `causal=True`). `state` is this growing cache,
    not a fixed-size recurrent state.

    Cost: O(N^2) time; the cache holds `kv_rank + rope_dim` numbers per token instead of `2 * H * head_dim`.

    Choices where the papers leave a detail open:
        - RoPE uses the rotate-half convention (DeepSeek's code rotates interleaved pairs; both are RoPE up
          to a fixed permutation of the rope channels), base `rope_base`, positions 0..N-1 (+ cache length).
        - `latent_norm=True` applies RMSNorm to the KV latent (and the query latent) as DeepSeek-V2 does;
          with `latent_norm=False` and `kv_rank >= dim` the module can represent any MHA exactly (TransMLA).
        - The up-projection `W_ukv` has no bias so that it can be absorbed; the output projection has one.

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token ([B, T + N] with a cache).

    Args:
        dim: channels C.
        num_heads: attention heads H.
        kv_rank: size of the joint KV latent (default `4 * head_dim`, as DeepSeek-V2's 512 for 128).
        q_rank: size of the query latent; None projects queries directly from x.
        head_dim: per-head query/key size without the rope part (default `dim // num_heads`).
        rope_dim: size of the decoupled rotary query/key part (default `head_dim // 2`, even); 0 = no RoPE.
        v_head_dim: per-head value size (default `head_dim`).
        causal: no token attends to a later one.
        latent_norm: RMSNorm on the latents.
        rope_base: RoPE frequency base.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    capabilities = Capabilities(
        paper="DeepSeek-V2 multi-head latent attention (arXiv 2405.04434); TransMLA (arXiv 2502.07864)",
        causal=True,
        mask=True,
        cost="N^2",
        state=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kv_rank: int | None = None,
        q_rank: int | None = None,
        head_dim: int | None = None,
        rope_dim: int | None = None,
        v_head_dim: int | None = None,
        causal: bool = False,
        latent_norm: bool = True,
        rope_base: float = 10000.0,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads)  # heads of their own width `head_dim`: `dim` need not divide
        head_dim = dim // num_heads if head_dim is None else head_dim
        check_range("head_dim", head_dim, 1)
        rope_dim = 2 * (head_dim // 4) if rope_dim is None else rope_dim
        if rope_dim < 0 or rope_dim % 2:
            raise ConfigError("rope_dim", rope_dim, "an even number >= 0")
        v_head_dim = head_dim if v_head_dim is None else v_head_dim
        kv_rank = 4 * head_dim if kv_rank is None else kv_rank
        check_range("kv_rank", kv_rank, 1)
        check_range("v_head_dim", v_head_dim, 1)
        if q_rank is not None:
            check_range("q_rank", q_rank, 1)
        check_range("attn_drop", attn_drop, 0.0, 1.0)

        self.head_dim, self.rope_dim, self.v_head_dim = head_dim, rope_dim, v_head_dim
        self.kv_rank, self.causal, self.attn_drop = kv_rank, causal, attn_drop
        self.scale = (head_dim + rope_dim) ** -0.5
        q_out = num_heads * (head_dim + rope_dim)
        if q_rank is None:
            self.q_proj = nn.Linear(dim, q_out, bias=False)
        else:
            self.q_proj = nn.Sequential(
                nn.Linear(dim, q_rank, bias=False),
                nn.RMSNorm(q_rank, eps=1e-6) if latent_norm else nn.Identity(),
                nn.Linear(q_rank, q_out, bias=False),
            )
        self.kv_down = nn.Linear(dim, kv_rank + rope_dim, bias=False)  # [W_dkv; W_kr]
        self.kv_norm = nn.RMSNorm(kv_rank, eps=1e-6) if latent_norm else nn.Identity()
        self.kv_up = nn.Linear(kv_rank, num_heads * (head_dim + v_head_dim), bias=False)  # per head [W_uk; W_uv]
        self.proj = nn.Linear(num_heads * v_head_dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)
        self.rope_base = rope_base

    def _rope_tables(self, start: int, n: int, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin tables [n, rope_dim] for positions start .. start+n-1, in ref's dtype."""
        dtype = torch.promote_types(ref.dtype, torch.float32)  # float64 stays float64, half precision -> float32
        inv_freq = self.rope_base ** (
            -torch.arange(0, self.rope_dim, 2, device=ref.device, dtype=dtype) / self.rope_dim
        )
        pos = torch.arange(start, start + n, device=ref.device, dtype=dtype)
        angles = pos[:, None] * inv_freq[None, :]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos().to(ref.dtype), angles.sin().to(ref.dtype)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        absorb: bool = False,
        state: tuple[torch.Tensor, torch.Tensor] | None = None,
        return_state: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Latent attention over x (and the cached tokens in `state`).

        Shapes:
            x: [B, N, C]; mask: [B, T + N] bool (T = cached tokens, 0 without a cache);
            state: (latent [B, T, kv_rank], rope_key [B, T, rope_dim]) -> [B, N, C]
            (and the updated state when `return_state`).
        """
        b, n, _ = x.shape
        h, dn, dr = self.num_heads, self.head_dim, self.rope_dim
        past = 0 if state is None else state[0].shape[1]

        q = self.q_proj(x).view(b, n, h, dn + dr).transpose(1, 2)  # [B, H, N, dn + dr]
        q_nope, q_rope = q.split([dn, dr], dim=-1)
        latent, k_rope = self.kv_down(x).split([self.kv_rank, dr], dim=-1)
        latent = self.kv_norm(latent)  # [B, N, r]
        if dr:
            cos, sin = self._rope_tables(past, n, x)
            q_rope, k_rope = _rotate(q_rope, cos, sin), _rotate(k_rope, cos, sin)
        if state is not None:
            latent = torch.cat([state[0], latent], dim=1)
            k_rope = torch.cat([state[1], k_rope], dim=1)
        t = latent.shape[1]
        if mask is not None and mask.shape[1] != t:
            raise ConfigError("mask", tuple(mask.shape), f"[B, {t}] (cached + new tokens)")

        run = self._absorbed if absorb else self._naive
        out = run(q_nope, q_rope, latent, k_rope, mask)  # [B, H, N, dv]
        y = self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, h * self.v_head_dim)))
        return (y, (latent, k_rope)) if return_state else y

    def _attend(self, q, k, v, mask):
        """Softmax attention; queries are the last N of the T keys (bottom-right causal alignment)."""
        dropout = self.attn_drop if self.training else 0.0
        return softmax_attention(q, k, v, mask=mask, causal=self.causal, scale=self.scale, dropout_p=dropout)

    def _naive(self, q_nope, q_rope, latent, k_rope, mask):
        """Decompress per-head keys and values from the latent, then ordinary multi-head attention."""
        b, t, _ = latent.shape
        h, dn, dr = self.num_heads, self.head_dim, self.rope_dim
        kv = self.kv_up(latent).view(b, t, h, dn + self.v_head_dim).transpose(1, 2)
        k_nope, v = kv.split([dn, self.v_head_dim], dim=-1)
        k = torch.cat([k_nope, k_rope[:, None].expand(b, h, t, dr)], dim=-1)
        q = torch.cat([q_nope, q_rope], dim=-1)
        return self._attend(q, k, v, mask)

    def _absorbed(self, q_nope, q_rope, latent, k_rope, mask):
        """Attention on the latent itself: W_uk folded into the queries, W_uv applied after."""
        b, t, r = latent.shape
        h, dn = self.num_heads, self.head_dim
        w_up = self.kv_up.weight.view(h, dn + self.v_head_dim, r)
        w_uk, w_uv = w_up.split([dn, self.v_head_dim], dim=1)  # [H, dn, r], [H, dv, r]
        q = torch.cat([torch.einsum("bhnd,hdr->bhnr", q_nope, w_uk), q_rope], dim=-1)  # [B, H, N, r + dr]
        k = torch.cat([latent, k_rope], dim=-1)[:, None].expand(b, h, t, r + self.rope_dim)
        v = latent[:, None].expand(b, h, t, r)
        out_latent = self._attend(q, k, v, mask)  # [B, H, N, r]
        return torch.einsum("bhnr,hvr->bhnv", out_latent, w_uv)

"""SoftplusAttention: softplus + l1 normalisation with a length-dependent scale, optional re-weighting (LSSA/LSSAR)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.errors import check_range


def softplus_attention_weights(
    logits: torch.Tensor,
    allowed: torch.Tensor | None = None,
    length_base: float = 64.0,
    reweight_power: float | None = None,
) -> torch.Tensor:
    """Length-scaled softplus attention weights, optionally re-weighted. Every row sums to one.

    For query i with n_i visible keys (after masking):
        LSSA:  a_ij = softplus(s_i * l_ij) / sum_m softplus(s_i * l_im),  s_i = log(n_i) / log(length_base)
        LSSAR: r_ij = a_ij^p / sum_m a_im^p   (computed as softmax_j(p * log softplus(s_i * l_ij)))
    Masked keys get weight exactly 0; a row without any visible key (a padded query under a causal mask)
    gets all-zero weights instead of NaN.

    Args:
        logits: scaled scores l = q k^T / sqrt(d).
        allowed: optional bool, True where query i may see key j (broadcast against `logits`).
        length_base: the base of the length scale; s_i = 1 when n_i = length_base.
        reweight_power: p of the re-weighting (None: plain LSSA).

    Shapes:
        logits: [..., Nq, Nk]; allowed: broadcastable to it; returns [..., Nq, Nk].
    """
    if allowed is None:
        count = torch.full(logits.shape[:-1] + (1,), logits.shape[-1], dtype=logits.dtype, device=logits.device)
    else:
        allowed = allowed.expand_as(logits)
        count = allowed.sum(-1, keepdim=True).to(logits.dtype)
    length_scale = count.clamp(min=1.0).log() / math.log(length_base)
    weights = F.softplus(length_scale * logits)
    if reweight_power is None:
        if allowed is not None:
            weights = weights.masked_fill(~allowed, 0.0)
        return weights / weights.sum(-1, keepdim=True).clamp(min=torch.finfo(weights.dtype).tiny)
    # a^p / sum a^p, in log space so that large p neither overflows nor underflows to 0/0
    log_weights = weights.clamp(min=torch.finfo(weights.dtype).tiny).log() * reweight_power
    if allowed is None:
        return log_weights.softmax(-1)
    log_weights = log_weights.masked_fill(~allowed, float("-inf"))
    log_weights = log_weights.masked_fill(~allowed.any(-1, keepdim=True), 0.0)  # rows without keys: no NaN
    return log_weights.softmax(-1) * allowed


class SoftplusAttention(Mechanism):
    """Softplus attention with a length-dependent scale (LSSA) and optional re-weighting (LSSAR).

    Paper: "Softplus Attention with Re-weighting Boosts Length Extrapolation in Large Language Models",
    Gao & Spratling, arXiv 2501.13428 (code: github.com/iminfine/freeatten). Softmax = exp + l1
    normalisation; the paper keeps the l1 normalisation and replaces exp by softplus, multiplies the
    logits by a dynamic scale from invariance entropy that grows with the number of visible tokens, and
    (LSSAR) sharpens the weights by a power followed by renormalisation. See `softplus_attention_weights`.

    Cost: O(N^2 d) time, O(N^2) memory per head (explicit weights; not a softmax, so it does not go through
    `scaled_dot_product_attention`).

    Choices where we could not check the paper's exact form (its code was not reachable from here):
        - Length scale s_i = log(n_i) / log(`length_base`) with n_i the number of keys query i sees (so it is
          row-dependent under causal or padding masks). The default base is the head dimension d
          (s_i = log_d n_i, our reading of the paper); `length_base=train_len` gives the log n / log
          train_len form, which is 1 at the training length.
        - Re-weighting: r = a^p / sum a^p (power then renormalise). Pre-multiplying a by n_i, which the
          paper does to centre the weights around 1, cancels in the renormalisation; we compute it in log
          space. `reweight_power=None` (default) is plain LSSA; p > 1 sharpens.

    Args:
        dim: model width C.
        num_heads: heads (C divisible by it).
        causal: causal masking.
        length_base: base of the length scale (default: head dim).
        reweight_power: re-weighting exponent p (None: off).
        qkv_bias: bias in the qkv projection.

    Shapes:
        x: [B, N, C]; mask: optional bool [B, N], True = real token; returns [B, N, C].
    """

    capabilities = Capabilities(
        paper="Softplus Attention with Re-weighting Boosts Length Extrapolation in Large Language Models "
        "(arXiv 2501.13428)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N^2",
        token_mixer=True,
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        causal: bool = False,
        length_base: float | None = None,
        reweight_power: float | None = None,
        qkv_bias: bool = True,
    ):
        super().__init__(num_heads, dim=dim)
        self.head_dim, self.causal = dim // num_heads, causal
        length_base = float(self.head_dim) if length_base is None else length_base
        check_range("length_base", length_base, 1.0, low_inclusive=False)
        if reweight_power is not None:
            check_range("reweight_power", reweight_power, 0.0, low_inclusive=False)
        self.length_base, self.reweight_power = length_base, reweight_power
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def attention_weights(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention weights and values of `forward`.

        Shapes: x [B, N, C]; mask optional bool [B, N]; returns (weights [B, H, N, N], v [B, H, N, D]).
        """
        tokens = x.shape[1]
        q, k, v = self.split_heads(self.qkv(x))
        allowed = None if mask is None else mask[:, None, None, :]
        if self.causal:
            tril = torch.ones(tokens, tokens, dtype=torch.bool, device=x.device).tril()
            allowed = tril if allowed is None else allowed & tril
        logits = (q * self.scale) @ k.transpose(-2, -1)
        return softplus_attention_weights(logits, allowed, self.length_base, self.reweight_power), v

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, tokens, channels = x.shape
        weights, v = self.attention_weights(x, mask)
        return self.proj((weights @ v).transpose(1, 2).reshape(batch, tokens, channels))

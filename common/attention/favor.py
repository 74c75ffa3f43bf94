"""Performer's FAVOR+: softmax attention approximated with positive orthogonal random features."""

from __future__ import annotations

import math

import torch
from torch import nn

from common.attention.base import Mechanism
from common.attention.linear import MODES, linear_attention
from common.attention.registry import Capabilities
from common.errors import check_choice, check_range

IMPLS = ("auto", "torch")


def orthogonal_random_features(
    num_features: int,
    dim: int,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random projection W with orthogonal rows within each block of `dim`, rows marginally N(0, I).

    Blocks of `dim` rows are Haar-random orthonormal (QR of a Gaussian matrix with the sign fix), stacked
    until `num_features` rows, and each row is rescaled to the length of an independent Gaussian vector
    (chi-distributed), so that E[W^T W] matches i.i.d. Gaussian features (the paper's regular ORF).

    Shapes:
        Returns [num_features, dim].
    """
    num_blocks = -(-num_features // dim)
    gaussian = torch.randn(num_blocks, dim, dim, generator=generator, device=device, dtype=torch.float64)
    q, r = torch.linalg.qr(gaussian)  # batched over blocks
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[:, None, :]  # sign fix: Haar-distributed
    w = q.transpose(-2, -1).reshape(num_blocks * dim, dim)[:num_features]  # rows orthonormal within a block
    lengths = torch.randn(num_features, dim, generator=generator, device=device, dtype=torch.float64).norm(
        dim=1, keepdim=True
    )
    return (w * lengths).to(dtype)


def favor_features(
    x: torch.Tensor, projection: torch.Tensor, *, is_query: bool, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Positive random features phi(x) = exp(W x - |x|^2 / 2 - c) / sqrt(m), with E[phi(q).phi(k)] ~ exp(q.k).

    The stabiliser c (detached) cancels in attention's ratio: per query row for queries, and one constant
    per (sample, head) over all real keys and features for keys (masked keys are left out of it, so they
    change nothing). `x` should already carry the d^-1/4 scaling.

    Shapes:
        x: [B, H, N, d]; projection: [m, d]; mask: [B, N] bool (keys only). Returns [B, H, N, m].
    """
    proj = x @ projection.transpose(0, 1)  # [B, H, N, m]
    half_sq_norm = x.square().sum(dim=-1, keepdim=True) / 2
    if is_query:
        stab = proj.amax(dim=-1, keepdim=True)
    else:
        visible = proj if mask is None else proj.masked_fill(~mask.to(torch.bool)[:, None, :, None], float("-inf"))
        stab = visible.amax(dim=(-2, -1), keepdim=True)
        stab = torch.where(torch.isfinite(stab), stab, torch.zeros_like(stab))  # a sample with no real key
    return torch.exp(proj - half_sq_norm - stab.detach()) / math.sqrt(projection.shape[0])


def favor_attention_torch(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    *,
    causal: bool = False,
    mode: str = "chunked",
    mask: torch.Tensor | None = None,
    chunk_size: int = 64,
) -> torch.Tensor:
    """FAVOR+ estimate of softmax(q k^T / sqrt(d)) v; causal through linear attention's prefix sums.

    Shapes:
        q, k: [B, H, N, d]; v: [B, H, N, Dv]; projection: [m, d]; mask: [B, N] bool. Returns [B, H, N, Dv].
    """
    scale = q.shape[-1] ** -0.25  # q.k / sqrt(d) = (q d^-1/4).(k d^-1/4)
    q_feat = favor_features(q * scale, projection, is_query=True)
    k_feat = favor_features(k * scale, projection, is_query=False, mask=mask)
    return linear_attention(q_feat, k_feat, v, causal=causal, mode=mode, mask=mask, eps=0.0, chunk_size=chunk_size)


def favor_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    projection: torch.Tensor,
    *,
    causal: bool = False,
    mode: str = "chunked",
    mask: torch.Tensor | None = None,
    chunk_size: int = 64,
    impl: str = "auto",
) -> torch.Tensor:
    """FAVOR+ attention; `impl` "auto" = "torch" for now. Shapes as `favor_attention_torch`."""
    check_choice("impl", impl, IMPLS)
    return favor_attention_torch(q, k, v, projection, causal=causal, mode=mode, mask=mask, chunk_size=chunk_size)


class FavorAttention(Mechanism):
    """Performer attention: FAVOR+ (Fast Attention Via positive Orthogonal Random features).

    Paper: Choromanski et al., "Rethinking Attention with Performers" (ICLR 2021, arXiv 2009.14794).
    Cost: O(N m d) time and O(m d) extra memory per head for m random features; no N x N map.

    Per head, softmax attention exp(q.k / sqrt(d)) is estimated without bias by phi(q).phi(k) with positive
    random features phi(x) = exp(W x - |x|^2/2) / sqrt(m), W holding m orthogonal Gaussian rows
    (`orthogonal_random_features`); out = phi(Q) (phi(K)^T V) / phi(Q) phi(K)^T 1. Causal attention uses
    prefix sums (`linear.py`'s parallel / chunked / recurrent forms, `mode=`). The projection is a buffer
    (saved in checkpoints, never trained) shared by the heads and redrawn every `redraw_interval`
    training-mode forward calls (the count lives in the module, not in the checkpoint).

    Choices where the paper leaves room: `num_features` defaults to round(d ln d) (at least d), as
    performer-pytorch; one projection shared by all heads; stabilisers subtracted inside the exponent
    (see `favor_features`), and no additive epsilon in the features so that they cancel exactly; in causal
    mode the key stabiliser is one constant over the sequence, so later tokens reach earlier outputs only
    through floating-point rounding (in exact arithmetic nothing looks ahead).

    Args:
        dim: model width C.
        num_heads: heads H; `dim` must be divisible by it.
        num_features: random features m per head (default round(d ln d), d = C/H).
        redraw_interval: redraw W every this many training forward calls; 0 or None = never.
        causal: token i sees tokens <= i.
        mode: causal implementation ("parallel", "chunked", "recurrent").
        chunk_size: chunk length for "chunked".
        qkv_bias: bias in the qkv projection.
        proj_drop: dropout after the output projection.

    Shapes:
        x: [B, N, C]; mask: [B, N] bool (True = real token). Output [B, N, C].
    """

    capabilities = Capabilities(
        paper="Rethinking Attention with Performers (Choromanski et al., ICLR 2021, arXiv 2009.14794)",
        causal=True,
        layout="tokens",
        mask=True,
        bias=False,
        cost="N",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_features: int | None = None,
        redraw_interval: int | None = 1000,
        causal: bool = False,
        mode: str = "chunked",
        chunk_size: int = 64,
        qkv_bias: bool = True,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        head_dim = dim // num_heads
        num_features = num_features or max(head_dim, round(head_dim * math.log(head_dim)))
        check_range("num_features", num_features, 1)
        check_range("redraw_interval", redraw_interval or 0, 0)
        check_choice("mode", mode, MODES)
        check_range("chunk_size", chunk_size, 1)
        self.head_dim, self.num_features = head_dim, num_features
        self.redraw_interval, self.causal, self.mode, self.chunk_size = redraw_interval, causal, mode, chunk_size
        self.steps_since_redraw = 0
        self.register_buffer("projection", orthogonal_random_features(num_features, head_dim))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    @torch.no_grad()
    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw a new random projection in place and restart the redraw count."""
        new = orthogonal_random_features(
            self.num_features, self.head_dim, generator=generator, device=self.projection.device
        )
        self.projection.copy_(new)
        self.steps_since_redraw = 0

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B, N, C] -> [B, N, C]; in training, counts a step of the redraw schedule."""
        if self.training and self.redraw_interval:
            if self.steps_since_redraw >= self.redraw_interval:
                self.redraw_features()
            self.steps_since_redraw += 1
        q, k, v = self.split_heads(self.qkv(x))  # 3 x [B, H, N, d]
        out = favor_attention(
            q,
            k,
            v,
            self.projection.to(q.dtype),
            causal=self.causal,
            mode=self.mode,
            mask=mask,
            chunk_size=self.chunk_size,
        )
        return self.proj_drop(self.proj(out.transpose(1, 2).flatten(2)))

"""RCMHA: multi-head attention with depth-wise convolutional q/k/v and relative positional encoding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.base import Mechanism
from common.attention.registry import Capabilities
from common.attention.softmax import softmax_attention
from common.errors import check_range


def _sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal encodings of (possibly negative) relative distances. Shapes: [R] -> [R, dim]."""
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angles = positions.float()[:, None] * inv_freq[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=-1)[:, :dim]


class RelativeConvAttention(Mechanism):
    """Relative convolutional multi-head attention: depth-wise convolved q, k, v and Transformer-XL style
    relative positional scores, through scaled dot-product attention.

    Paper: "RCMHA: Relative Convolutional Multi-Head Attention for Natural Language Modelling",
    Sugiharto, Aradea and Mubarok, arXiv 2308.03429.

    q, k and v come from one linear projection followed by a depth-wise 1-D convolution along the sequence
    (one `kernel_size` filter per channel, as in Multi-DConv-Head attention). Scores add a relative
    position term to the content term (Transformer-XL, Dai et al. 2019):

        s_ij = ((q_i + u_h) . k_j + (q_i + v_h) . W_R^h r_{i-j}) / sqrt(head_dim)

    with `r_d` the sinusoidal encoding of the signed distance d, `W_R` a learned projection and `u, v`
    learned per-head biases. The position term is an additive logits bias to `scaled_dot_product_attention`
    (through `common.attention.softmax.softmax_attention`).

    Cost: O(N^2) time and memory per head (the relative term is a dense [N, N] bias per head).

    Choices where the paper leaves a detail open:
        - Convolution after the linear projection (Primer's MDHA order), zero padding; centred when not
          causal, left-only (causal convolution) when `causal=True`, so no output sees a later token.
        - Distances are signed and cover both directions (2N-1 encodings) when not causal.
        - Mask: padded tokens' q/k/v are zeroed before the convolution, so they reach real tokens neither
          through attention nor through the convolution.

    Shapes:
        x: [B, N, C] -> [B, N, C]; mask: [B, N] bool, True = real token.

    Args:
        dim: channels C; must be divisible by `num_heads`.
        num_heads: attention heads.
        kernel_size: depth-wise convolution size (1 = no convolution beyond a per-channel scale).
        causal: no token attends to (or is convolved with) a later one.
        qkv_bias: bias on the query/key/value projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    capabilities = Capabilities(
        paper="RCMHA: Relative Convolutional Multi-Head Attention for Natural Language Modelling "
        "(Sugiharto et al., arXiv 2308.03429)",
        causal=True,
        mask=True,
        cost="N^2",
        qkv_bias=True,
    )

    def __init__(
        self,
        dim: int,
        num_heads: int,
        kernel_size: int = 3,
        causal: bool = False,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        super().__init__(num_heads, dim=dim)
        check_range("kernel_size", kernel_size, 1)
        check_range("attn_drop", attn_drop, 0.0, 1.0)
        self.head_dim, self.kernel_size = dim // num_heads, kernel_size
        self.causal, self.attn_drop = causal, attn_drop
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.dwconv = nn.Conv1d(3 * dim, 3 * dim, kernel_size, groups=3 * dim)
        self.pos_proj = nn.Linear(dim, dim, bias=False)  # W_R
        self.content_bias = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # u
        self.position_bias = nn.Parameter(torch.zeros(num_heads, self.head_dim))  # v
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def _convolve(self, qkv: torch.Tensor) -> torch.Tensor:
        """Depth-wise convolution along the sequence. Shapes: [B, N, 3C] -> [B, N, 3C]."""
        size = self.kernel_size
        left = size - 1 if self.causal else (size - 1) // 2
        padded = F.pad(qkv.transpose(1, 2), (left, size - 1 - left))
        return self.dwconv(padded).transpose(1, 2)

    def relative_scores(self, q: torch.Tensor) -> torch.Tensor:
        """The unscaled position term `(q_i + v_h) . W_R^h r_{i-j}`.

        Shapes:
            q: [B, H, N, D] -> [B, H, N, N].
        """
        b, h, n, d = q.shape
        distances = torch.arange(n - 1, -n, -1, device=q.device)  # N-1, ..., -(N-1)
        rel = self.pos_proj(_sinusoid(distances, h * d).to(q.dtype)).view(2 * n - 1, h, d)
        per_distance = torch.einsum("bhnd,rhd->bhnr", q + self.position_bias[:, None, :], rel)  # [B, H, N, 2N-1]
        idx = torch.arange(n, device=q.device)
        index = (n - 1) - (idx[:, None] - idx[None, :])  # position of distance i-j in `distances`
        return per_distance.gather(-1, index[None, None].expand(b, h, n, n))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Relative convolutional self-attention.

        Shapes:
            x: [B, N, C]; mask: [B, N] bool, True = real token -> [B, N, C].
        """
        b, n, c = x.shape
        qkv = self.qkv(x)
        if mask is not None:
            qkv = qkv * mask[..., None].to(qkv.dtype)
        qkv = self._convolve(qkv)
        q, k, v = self.split_heads(qkv)

        bias = self.relative_scores(q) * self.head_dim**-0.5  # SDPA scales only the content term
        dropout = self.attn_drop if self.training else 0.0
        q_content = q + self.content_bias[:, None, :]
        out = softmax_attention(q_content, k, v, mask=mask, bias=bias, causal=self.causal, dropout_p=dropout)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))

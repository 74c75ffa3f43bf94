"""NestedMorph's building blocks in 3-D (official code: AS-Lab `src/models/nestedmorph.py`, on DAE-Former and MSA2Net).

Token blocks work on [B, N, C] with the map's `dhw`; convolutional blocks on [B, C, D, H, W]. The two token
attentions are the core's `efficient` (Shen et al.) and `channel` (XCiT) mechanisms; the large-kernel attention
and the multi-scale gated attention are convolutional gates (no token-token or channel-channel map), kept here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention import build


def to_tokens(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[B, C, D, H, W] -> ([B, N, C], (D, H, W))."""
    return x.flatten(2).transpose(1, 2), tuple(x.shape[2:])


def to_map(x: torch.Tensor, dhw: tuple[int, int, int]) -> torch.Tensor:
    """[B, N, C] -> [B, C, D, H, W]."""
    return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], *dhw)


class OverlapPatchEmbed(nn.Module):
    """MiT's overlapping patch embedding: a strided Conv3d, then LayerNorm over channels. Returns tokens."""

    def __init__(self, in_ch: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv3d(in_ch, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        tokens, dhw = to_tokens(self.proj(x))
        return self.norm(tokens), dhw


class PatchExpand(nn.Module):
    """Token upsampling by `scale` per axis: Linear C -> scale^3 * C / div, 3-D pixel shuffle, LayerNorm.

    `scale=2, div=2` is the decoder's PatchExpand (C -> C/2 at twice the size); `scale=4, div=1` the final X4.
    """

    def __init__(self, dim: int, scale: int = 2, div: int = 2):
        super().__init__()
        self.scale, self.out_dim = scale, dim // div
        self.expand = nn.Linear(dim, scale**3 * self.out_dim, bias=False)
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, x: torch.Tensor, dhw: tuple[int, int, int]) -> tuple[torch.Tensor, tuple[int, int, int]]:
        b, (d, h, w), s, c = x.shape[0], dhw, self.scale, self.out_dim
        x = self.expand(x).reshape(b, d, h, w, s, s, s, c)
        x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, d * s * h * s * w * s, c)
        return self.norm(x), (d * s, h * s, w * s)


class MixFFN(nn.Module):
    """Mix-FFN with skip (DAE-Former's "mix_skip"): fc1 -> GELU(LN(DWConv3d(h) + h)) -> fc2, hidden 4C."""

    def __init__(self, dim: int, ratio: int = 4):
        super().__init__()
        hidden = dim * ratio
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.dwconv = nn.Conv3d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor, dhw: tuple[int, int, int]) -> torch.Tensor:
        h = self.fc1(x)
        mixed = to_tokens(self.dwconv(to_map(h, dhw)))[0]
        return self.fc2(F.gelu(self.norm(mixed + h)))


class DualTransformerBlock(nn.Module):
    """DAE-Former's dual block: spatial efficient attention, Mix-FFN, channel (XCiT) attention, Mix-FFN, each
    pre-norm and residual. Linear in the number of tokens."""

    def __init__(self, dim: int, spatial_heads: int = 1, channel_heads: int = 8):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(4))
        self.spatial = build("efficient", dim, spatial_heads)
        self.channel = build("channel", dim, channel_heads)
        self.ffn1, self.ffn2 = MixFFN(dim), MixFFN(dim)

    def forward(self, x: torch.Tensor, dhw: tuple[int, int, int]) -> torch.Tensor:
        x = x + self.spatial(self.norms[0](x), dhw=dhw)
        x = x + self.ffn1(self.norms[1](x), dhw)
        x = x + self.channel(self.norms[2](x))
        return x + self.ffn2(self.norms[3](x), dhw)


class LargeKernelAttention(nn.Module):
    """VAN's large-kernel attention in 3-D: DW 5^3 -> DW 7^3 dilated 3 -> 1x1 gives a map that gates the input
    (receptive field 21^3 at the cost of depthwise convs)."""

    def __init__(self, dim: int):
        super().__init__()
        self.local = nn.Conv3d(dim, dim, 5, padding=2, groups=dim)
        self.wide = nn.Conv3d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.mix = nn.Conv3d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mix(self.wide(self.local(x)))


class LKABlock(nn.Module):
    """VAN block: x + s1 * (1x1 -> GELU -> LKA -> 1x1 + shortcut)(BN(x)); x + s2 * Mlp(BN(x)); layer scale 1e-2.
    The Mlp is 1x1 -> DW 3^3 -> GELU -> 1x1 with hidden 4C. Works on tokens, like the decoder around it."""

    def __init__(self, dim: int, ratio: int = 4, layer_scale: float = 1e-2):
        super().__init__()
        hidden = dim * ratio
        self.norm1, self.norm2 = nn.BatchNorm3d(dim), nn.BatchNorm3d(dim)
        self.proj_in, self.proj_out = nn.Conv3d(dim, dim, 1), nn.Conv3d(dim, dim, 1)
        self.lka = LargeKernelAttention(dim)
        self.mlp = nn.Sequential(
            nn.Conv3d(dim, hidden, 1),
            nn.Conv3d(hidden, hidden, 3, padding=1, groups=hidden),
            nn.GELU(),
            nn.Conv3d(hidden, dim, 1),
        )
        self.scale1 = nn.Parameter(torch.full((dim, 1, 1, 1), layer_scale))
        self.scale2 = nn.Parameter(torch.full((dim, 1, 1, 1), layer_scale))

    def forward(self, x: torch.Tensor, dhw: tuple[int, int, int]) -> torch.Tensor:
        x = to_map(x, dhw)
        y = self.norm1(x)
        x = x + self.scale1 * (self.proj_out(self.lka(F.gelu(self.proj_in(y)))) + y)
        x = x + self.scale2 * self.mlp(self.norm2(x))
        return to_tokens(x)[0]


def conv_bn(c_in: int, c_out: int, kernel: int = 1, dilation: int = 1, groups: int = 1, relu: bool = False):
    layers = [
        nn.Conv3d(c_in, c_out, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm3d(c_out),
    ]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class MultiScaleGatedAttention(nn.Module):
    """Nested attention fusion (MSA2Net's MultiScaleGatedAttn) of an encoder skip x and a decoder feature g.

    Local branch on x: DW 3^3 -> 3^3 dilation 2 -> 1x1; global branch on g: 1x1 over [mean_c(g), max_c(g)].
    Their sum picks, per voxel, softmax weights (a, b) of the two inputs: x_a = a x + x, g_a = b g + g; the nested
    product (sigmoid(x_a) g_a) (sigmoid(g_a) x_a) then gates x once more: y = BN(1x1(sigmoid(BN(1x1(inter))) x)).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.local = nn.Sequential(
            conv_bn(dim, dim, 3, groups=dim, relu=True), conv_bn(dim, dim, 3, dilation=2, relu=True), conv_bn(dim, dim)
        )
        self.glob = conv_bn(2, 1)
        self.fuse_norm = nn.BatchNorm3d(dim)
        self.select = nn.Conv3d(dim, 2, 1)
        self.inter = conv_bn(dim, dim)
        self.out = conv_bn(dim, dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """x, g: [B, C, D, H, W] -> [B, C, D, H, W]."""
        glob = self.glob(torch.cat([g.mean(1, keepdim=True), g.amax(1, keepdim=True)], dim=1))
        a, b = self.select(self.fuse_norm(self.local(x) + glob)).softmax(dim=1).split(1, dim=1)
        x_a, g_a = a * x + x, b * g + g
        inter = (torch.sigmoid(x_a) * g_a) * (torch.sigmoid(g_a) * x_a)
        return self.out(torch.sigmoid(self.inter(inter)) * x)

"""TransDAE's building blocks, on [B, N, C] tokens of an H x W map (row-major), as DAE-Former's code lays them out.

- `MixFFN`: fc C -> r C, depth-wise 3x3 conv with a skip around it, LayerNorm, GELU, fc r C -> C (DAE-Former's
  `MixFFN_skip`).
- `DualTransformerBlock`: channel attention (XCiT, the core's `channel`) and spatial efficient attention (the core's
  `efficient`), each followed by a Mix-FFN, all pre-norm residual; channel first, as DAE-Former's code.
- `OverlapPatchEmbed` / `PatchExpand`: the MiT encoder's strided overlapping convolution and the decoder's linear
  expansion to a k-times finer map (k = 2, or 4 for the last, "FinalPatchExpand_X4").
- `InterScaleInteraction`: TransDAE's skip module: each skip level gathers its neighbouring encoder scales and
  refines them with a decomposed large kernel (5x5 depth-wise, 7x7 depth-wise with dilation 3, 1x1: a 21x21
  receptive field at the cost of small kernels), used as a gate on the fused features.
- `CrossAttentionSkip`: DAE-Former's skip fusion: efficient cross-attention (the core's `cross_efficient`) between
  the skip and the upsampled decoder features, added to their concatenation, a Mix-FFN, a linear back to C.
- `FullResolutionSkip` (not in the papers; `model.full_res_skip`): convolutions on the image at full resolution,
  fused with the last expanded map, for structures thinner than the first stage's tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention import build, capabilities


def to_map(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B, H*W, C] -> [B, C, H, W]."""
    return x.transpose(1, 2).unflatten(2, hw)


def to_tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H*W, C]."""
    return x.flatten(2).transpose(1, 2)


class MixFFN(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.norm = nn.LayerNorm(hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h = self.fc1(x)
        h = to_tokens(self.dwconv(to_map(h, hw))) + h  # the skip of MixFFN_skip: local mixing on top of the token
        return self.fc2(F.gelu(self.norm(h)))


class DualTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int = 1, channel_heads: int = 8, mlp_ratio: float = 4.0, spatial="efficient"):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1, self.norm2, self.norm3, self.norm4 = (nn.LayerNorm(dim) for _ in range(4))
        self.channel_attn = build("channel", dim, channel_heads)
        self.spatial_attn = build(spatial, dim, heads)
        self.spatial_2d = capabilities(spatial).layout == "2d"  # e.g. routing attention needs the map's shape
        self.mlp1, self.mlp2 = MixFFN(dim, hidden), MixFFN(dim, hidden)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        x = x + self.channel_attn(self.norm1(x))
        x = x + self.mlp1(self.norm2(x), hw)
        y = self.norm3(x)
        x = x + (self.spatial_attn(y, hw=hw) if self.spatial_2d else self.spatial_attn(y))
        return x + self.mlp2(self.norm4(x), hw)


class OverlapPatchEmbed(nn.Module):
    """Strided overlapping convolution, then LayerNorm over each token's channels (`norm`). On a one-channel image
    that norm makes a token blind to its patch's intensity scale (conv(c x) = c conv(x) up to the bias): a uniform
    patch of grey matter and one of white matter embed alike."""

    def __init__(self, in_chans: int, dim: int, kernel: int, stride: int, norm: bool = True):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """[B, C_in, H, W] -> tokens [B, H/s * W/s, dim] and their (H/s, W/s)."""
        x = self.proj(x)
        return self.norm(to_tokens(x)), (x.shape[2], x.shape[3])


class PatchExpand(nn.Module):
    """Linear C -> k^2 C_out, each token unfolded into a k x k patch of C_out channels, LayerNorm."""

    def __init__(self, dim: int, out_dim: int, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> tuple[torch.Tensor, tuple[int, int]]:
        x = F.pixel_shuffle(to_map(self.expand(x), hw), self.scale)
        return self.norm(to_tokens(x)), (x.shape[2], x.shape[3])


class LargeKernelGate(nn.Module):
    """Decomposed large-kernel attention (VAN's LKA): 5x5 depth-wise, 7x7 depth-wise dilated 3, 1x1; gates x."""

    def __init__(self, dim: int):
        super().__init__()
        self.local = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.dilated = nn.Conv2d(dim, dim, 7, padding=9, dilation=3, groups=dim)
        self.pointwise = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pointwise(self.dilated(self.local(x)))


class InterScaleInteraction(nn.Module):
    """The skip of level i: levels i-1, i, i+1 of the encoder brought to level i's grid (average pooling from the
    finer, bilinear upsampling from the coarser), projected to its width and summed, refined by a large-kernel gate
    and a 1x1 projection, and added to the level's own features (so a zero module leaves the plain skip)."""

    def __init__(self, dims: list[int], level: int):
        super().__init__()
        self.level = level
        self.sources = [j for j in (level - 1, level, level + 1) if 0 <= j < len(dims)]
        self.project = nn.ModuleList(nn.Conv2d(dims[j], dims[level], 1) for j in self.sources)
        self.gate = LargeKernelGate(dims[level])
        self.out = nn.Conv2d(dims[level], dims[level], 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """features: the encoder's maps [B, C_j, H_j, W_j], finest first -> level i's skip [B, C_i, H_i, W_i]."""
        own = features[self.level]
        size = own.shape[2:]
        fused = 0
        for j, project in zip(self.sources, self.project):
            f = features[j]
            if j < self.level:
                f = F.adaptive_avg_pool2d(f, size)
            elif j > self.level:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            fused = fused + project(f)
        return own + self.out(self.gate(F.gelu(fused)))


class CrossAttentionSkip(nn.Module):
    """Skip tokens x [B, N, C] and upsampled decoder tokens d [B, N, C] -> [B, N, C]: efficient cross-attention
    (queries and keys from the skip, values from the decoder) added to [d, x], a Mix-FFN on the 2C tokens, a linear
    back to C (DAE-Former's CrossAttentionBlock + concat_linear)."""

    def __init__(self, dim: int, heads: int = 1, mlp_ratio: float = 2.0):
        super().__init__()
        self.norm = nn.LayerNorm(dim)  # shared by both inputs, as DAE-Former
        self.attn = build("cross_efficient", dim, heads, value_dim=dim, out_dim=2 * dim)
        self.attn_norm = nn.LayerNorm(2 * dim)
        self.mlp_norm = nn.LayerNorm(2 * dim)
        self.mlp = MixFFN(2 * dim, int(2 * dim * mlp_ratio))
        self.reduce = nn.Linear(2 * dim, dim)

    def forward(self, skip: torch.Tensor, decoder: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        attended = self.attn_norm(self.attn(self.norm(skip), self.norm(decoder)))
        x = torch.cat([decoder, skip], dim=-1) + attended
        x = x + self.mlp(self.mlp_norm(x), hw)
        return self.reduce(x)


class FullResolutionSkip(nn.Module):
    """The input's own pixels as the last skip: two 3x3 convolutions on the image at full resolution, concatenated
    with the decoder's final expanded map and fused by a 3x3 convolution (no normalisation: intensity is the cue)."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        self.encode = nn.Sequential(
            nn.Conv2d(in_chans, dim, 3, padding=1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1), nn.GELU()
        )
        self.fuse = nn.Sequential(nn.Conv2d(2 * dim, dim, 3, padding=1), nn.GELU())

    def forward(self, image: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([decoded, self.encode(image)], 1))

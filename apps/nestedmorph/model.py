"""NestedMorph (Marthi et al., WACV 2025, arXiv 2410.02550) and the VoxelMorph baseline, behind one interface.

`RegistrationNet(arch=...)(moving, fixed) -> (warped, ddf)`: `ddf` [B, 3, D, H, W] is the dense displacement
in voxels (MONAI's convention: channel i moves along spatial axis i) and `warped` is `moving` resampled at
x + ddf(x) by MONAI's `Warp` (trilinear, zeros outside). `arch=nestedmorph` is the paper's network;
`arch=voxelmorph` is MONAI's `VoxelMorph` (diffeomorphic: its velocity field is integrated in 7 squaring steps).
NestedMorph's official code predicts the displacement itself (`integrate=0`); `integrate=n` reads its output as a
stationary velocity field and integrates it by scaling and squaring in n steps (MONAI `DVF2DDF`), as VoxelMorph.
"""

from __future__ import annotations

import warnings

import torch
from monai.networks.blocks import DVF2DDF
from monai.networks.nets import VoxelMorph
from torch import nn

from apps.nestedmorph.blocks import (
    DualTransformerBlock,
    LKABlock,
    MultiScaleGatedAttention,
    OverlapPatchEmbed,
    PatchExpand,
    to_map,
    to_tokens,
)
from common.errors import ConfigError, check_choice, check_range
from common.medical.warp import TraceableWarp

ARCHS = ("nestedmorph", "voxelmorph")
# MONAI warns on every Warp that its compiled resampler is absent; torch's grid_sample is the one we want.
warnings.filterwarnings("ignore", message="monai.networks.blocks.Warp: Using PyTorch native grid_sample")
FLOW_INIT_STD = 1e-5  # the official flow head: weights ~ N(0, 1e-5), bias 0, so training starts at the identity


class Encoder(nn.Module):
    """MiT-style 4-stage encoder: overlapping patch embeddings (k 7/3/3/3, stride 4/2/2/2), dual blocks, LN."""

    def __init__(self, in_ch: int, dims: tuple[int, ...], depth: int, channel_heads: int):
        super().__init__()
        ins, kernels, strides = (in_ch, *dims[:-1]), (7, 3, 3, 3), (4, 2, 2, 2)
        self.embeds = nn.ModuleList(OverlapPatchEmbed(i, d, k, s) for i, d, k, s in zip(ins, dims, kernels, strides))
        self.blocks = nn.ModuleList(
            nn.ModuleList(DualTransformerBlock(d, channel_heads=channel_heads) for _ in range(depth)) for d in dims
        )
        self.norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, 2, S, S, S] -> maps at S/4, S/8, S/16, S/32."""
        skips = []
        for embed, blocks, norm in zip(self.embeds, self.blocks, self.norms):
            tokens, dhw = embed(x)
            for block in blocks:
                tokens = block(tokens, dhw)
            x = to_map(norm(tokens), dhw)
            skips.append(x)
        return skips


class DecoderStage(nn.Module):
    """Nested attention fusion of the decoder feature with the encoder skip, LN, blocks, then upsampling."""

    def __init__(self, dim: int, block: str, depth: int, channel_heads: int, final: bool = False):
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.fusion = MultiScaleGatedAttention(dim)
        self.norm = nn.LayerNorm(dim)
        make = {"dual": lambda: DualTransformerBlock(dim, channel_heads=channel_heads), "lka": lambda: LKABlock(dim)}
        self.blocks = nn.ModuleList(make[block]() for _ in range(depth))
        self.up = PatchExpand(dim, scale=4, div=1) if final else PatchExpand(dim)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """x: decoder tokens at the skip's size; skip: [B, C, D, H, W]. Returns the upsampled map."""
        g, dhw = to_map(self.linear(x), skip.shape[2:]), tuple(skip.shape[2:])
        tokens = self.norm(to_tokens(self.fusion(skip, g))[0])
        for block in self.blocks:
            tokens = block(tokens, dhw)
        return self.up(tokens, dhw)


class NestedMorphNet(nn.Module):
    """Encoder -> PatchExpand -> [fusion + 2 dual blocks] -> [fusion + 2 LKA blocks] x 2 -> X4 expand ->
    Conv3d(C0 -> 3) -> flow head Conv3d(3 -> 3, k 3) initialised near zero. Input: concat(moving, fixed)."""

    def __init__(self, dims: tuple[int, ...], encoder_depth: int, decoder_depth: int, channel_heads: int):
        super().__init__()
        self.encoder = Encoder(2, dims, encoder_depth, channel_heads)
        self.bottom_up = PatchExpand(dims[3])
        self.stages = nn.ModuleList(
            [
                DecoderStage(dims[2], "dual", decoder_depth, channel_heads),
                DecoderStage(dims[1], "lka", decoder_depth, channel_heads),
                DecoderStage(dims[0], "lka", decoder_depth, channel_heads, final=True),
            ]
        )
        self.last = nn.Linear(dims[0], 3)  # the official 1x1 Conv3d(C0 -> 3), as a GEMM on the tokens
        self.flow = nn.Conv3d(3, 3, 3, padding=1)
        nn.init.normal_(self.flow.weight, 0.0, FLOW_INIT_STD)
        nn.init.zeros_(self.flow.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1, e2, e3, e4 = self.encoder(x)
        tokens, dhw = self.bottom_up(*to_tokens(e4))
        for stage, skip in zip(self.stages, (e3, e2, e1)):
            tokens, dhw = stage(tokens, skip)
        return self.flow(to_map(self.last(tokens), dhw))


class RegistrationNet(nn.Module):
    """Deformable registration of `moving` onto `fixed` ([B, 1, S, S, S] each, intensities in [0, 1]).

    Args:
        arch: "nestedmorph" (the paper) or "voxelmorph" (MONAI's VoxelMorph, the baseline).
        size: S, the cube the volumes are resampled to (the paper: 64); a multiple of 32 for NestedMorph.
        dims: NestedMorph's stage widths (the official code: 48, 96, 192, 384).
        encoder_depth: dual blocks per encoder stage (official: 1). decoder_depth: blocks per decoder stage (2).
        channel_heads: heads of the channel attention (8); every width must be a multiple of it.
        integrate: scaling-and-squaring steps turning NestedMorph's output into a diffeomorphic displacement;
            0 (the official code) uses the output as the displacement. VoxelMorph always integrates 7 steps.
    """

    def __init__(
        self,
        arch: str = "nestedmorph",
        size: int = 64,
        dims: tuple[int, ...] = (48, 96, 192, 384),
        encoder_depth: int = 1,
        decoder_depth: int = 2,
        channel_heads: int = 8,
        integrate: int = 0,
    ):
        super().__init__()
        check_choice("arch", arch, ARCHS)
        check_range("size", size, 32)
        check_range("integrate", integrate, 0, 16)
        dims = tuple(int(d) for d in dims)
        if arch == "nestedmorph":
            if size % 32:
                raise ConfigError("size", size, "a multiple of 32 (NestedMorph downsamples by 32)")
            doubling = all(2 * a == b for a, b in zip(dims, dims[1:]))
            if len(dims) != 4 or not doubling or any(d % channel_heads for d in dims):
                raise ConfigError("dims", list(dims), f"4 doubling widths, multiples of channel_heads={channel_heads}")
            self.net = NestedMorphNet(dims, encoder_depth, decoder_depth, channel_heads)
        else:
            self.net = VoxelMorph()  # MONAI's default: UNet (16, 32, 32, 32, 32, 32), 7 integration steps
            integrate = self.net.dvf2ddf.num_steps  # run below as VoxelMorph.forward does (full resolution)
        self.arch, self.size = arch, int(size)
        self.warp = TraceableWarp(mode="bilinear", padding_mode="zeros")
        self.integrate = DVF2DDF(int(integrate), mode="bilinear", padding_mode="zeros") if integrate else None
        if self.integrate is not None:
            self.integrate.warp_layer = TraceableWarp(mode="bilinear", padding_mode="zeros")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """moving, fixed: [B, 1, S, S, S] -> (warped [B, 1, S, S, S], ddf [B, 3, S, S, S] in voxels).

        The network may run in bf16 (autocast); integration and warping never do: MONAI builds the sampling grid
        in the field's dtype, and in bf16 a voxel coordinate near 32 moves in steps of 1/4 voxel, so a warp
        rounds the displacement away and scaling and squaring (which adds 1/128 of the field) does not integrate.
        """
        x = torch.cat([moving, fixed], dim=1)
        field = self.net.backbone(x) if self.arch == "voxelmorph" else self.net(x)
        with torch.autocast(x.device.type, enabled=False):
            ddf = field.float()
            if self.integrate is not None:
                ddf = self.integrate(ddf)
            return self.warp(moving.float(), ddf), ddf

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        shape = (2, 1, self.size, self.size, self.size)  # batch 2: torch.export specialises a dynamic dim seen as 1
        return torch.rand(shape, generator=g), torch.rand(shape, generator=g)

    def export_spec(self) -> dict:
        vol = {"shape": ["B", 1, self.size, self.size, self.size], "dtype": "float32"}
        return {
            "inputs": {"moving": vol, "fixed": vol},
            "outputs": {"warped": vol, "ddf": {"shape": ["B", 3, self.size, self.size, self.size], "dtype": "float32"}},
            "size": self.size,
            "ddf_units": "voxels of the size^3 grid; channel i along spatial axis i",
        }

"""TransDAE (Azad B., Adibfar, Fu; arXiv 2409.02018): a hierarchical dual-attention transformer U-Net for 2-D
medical image segmentation, on DAE-Former's code (Azad R. et al., arXiv 2212.13504) as the concrete reference,
and the baseline it is compared with (MONAI's UNet), chosen by `arch`.

Encoder (MiT): stage i embeds with an overlapping strided convolution (7x7 stride 4, or 3x3 stride 2 with
`stem_stride=2`; then 3x3 stride 2) and runs
`depths[i]` dual transformer blocks (XCiT channel attention + efficient spatial attention, Mix-FFN with skip).
Skips: each encoder level but the coarsest passes the Inter-Scale Interaction Module (its neighbouring scales,
decomposed large-kernel gate). Decoder: the coarsest map is patch-expanded (x2); at each finer level the
upsampled decoder tokens are projected to the level's width and fused with the skip by efficient cross-attention,
refined by `decoder_depth` dual blocks and expanded again; the finest level expands x4 (x `stem_stride`) to the
input grid and, with `full_res_skip`, is fused with a full-resolution convolutional path on the image; a 1x1
convolution gives the class logits.
"""

from __future__ import annotations

import torch
from monai.networks.nets import UNet
from torch import nn

from apps.transdae.blocks import (
    CrossAttentionSkip,
    DualTransformerBlock,
    FullResolutionSkip,
    InterScaleInteraction,
    OverlapPatchEmbed,
    PatchExpand,
    to_map,
)
from common.errors import ConfigError, check_choice, check_range

ARCHS = ("transdae", "unet")


class SegmenterIO:
    """What the pipeline asks of every architecture here: one image batch [B, 1, S, S] in, logits out."""

    in_chans: int
    num_classes: int
    img_size: int

    def example_inputs(self) -> tuple[torch.Tensor]:
        return (torch.randn(2, self.in_chans, self.img_size, self.img_size),)

    def export_spec(self) -> dict:
        s = self.img_size
        return {
            "inputs": {"image": {"shape": ["N", self.in_chans, s, s], "dtype": "float32"}},
            "outputs": {"logits": {"shape": ["N", self.num_classes, s, s], "dtype": "float32"}},
            "classes": list(self.class_names),
            "arch": self.arch,
        }


class TransDAE(SegmenterIO, nn.Module):
    """Args:
    in_chans, num_classes, img_size: the data's (img_size divisible by stem_stride * 2^(stages - 1)).
    dims: widths of the encoder stages (the paper: 64, 128, 320, 512).
    depths: dual blocks per encoder stage (the paper: 2 each).
    decoder_depth: dual blocks per decoder level (the paper: 2).
    heads: heads of the efficient (spatial and cross) attention (DAE-Former: 1).
    channel_heads: heads of the channel attention (DAE-Former: 8); must divide every width.
    mlp_ratio: Mix-FFN hidden width / width (DAE-Former: 4).
    spatial_attention: the spatial token mixer of the dual blocks (the paper: efficient; any registered
        self-attention mechanism of the core fits).
    isim: the Inter-Scale Interaction Module on the skips (false: DAE-Former's plain skips, the ablation).
    stem_norm: MiT's LayerNorm after the first patch embedding (false: the raw intensities stay in the tokens,
        where intensity is the tissue's cue; see `OverlapPatchEmbed`).
    stem_stride: the first embedding's stride (MiT: 4, kernel 7; 2 gives a 3x3 kernel; 1 a 1x1), and so the final
        expansion's factor.
    full_res_skip: fuse the final expanded map with a full-resolution path on the image (`FullResolutionSkip`)
        before the head (DAE-Former: the expanded map alone).
    """

    arch = "transdae"

    def __init__(
        self,
        in_chans: int = 1,
        num_classes: int = 4,
        img_size: int = 64,
        class_names: list[str] | None = None,
        dims: tuple[int, ...] = (32, 64, 128, 160),
        depths: tuple[int, ...] = (1, 1, 1, 1),
        decoder_depth: int = 1,
        heads: int = 1,
        channel_heads: int = 8,
        mlp_ratio: float = 4.0,
        spatial_attention: str = "efficient",
        isim: bool = True,
        stem_norm: bool = True,
        stem_stride: int = 4,
        full_res_skip: bool = False,
    ):
        super().__init__()
        dims, depths = list(dims), list(depths)
        if len(dims) != len(depths) or len(dims) < 2:
            raise ConfigError("depths", depths, f"one depth per stage of dims={dims} (at least 2 stages)")
        check_choice("stem_stride", stem_stride, (1, 2, 4))
        stride = stem_stride * 2 ** (len(dims) - 1)
        if img_size % stride:
            raise ConfigError("img_size", img_size, f"a multiple of {stride} (the coarsest stage's stride)")
        check_range("decoder_depth", decoder_depth, 0)
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])

        def blocks(dim: int, n: int) -> nn.ModuleList:
            return nn.ModuleList(
                DualTransformerBlock(dim, heads, channel_heads, mlp_ratio, spatial_attention) for _ in range(n)
            )

        widths, strides = [in_chans, *dims[:-1]], [stem_stride] + [2] * (len(dims) - 1)
        self.embeds = nn.ModuleList(
            OverlapPatchEmbed(w, d, 2 * s - 1, s, norm=stem_norm or i > 0)  # kernels 7 (stride 4) and 3 (stride 2)
            for i, (w, d, s) in enumerate(zip(widths, dims, strides))
        )
        self.encoder = nn.ModuleList(blocks(d, n) for d, n in zip(dims, depths))
        self.encoder_norms = nn.ModuleList(nn.LayerNorm(d) for d in dims)
        levels = range(len(dims) - 1)
        self.isim = nn.ModuleList(InterScaleInteraction(dims, i) for i in levels) if isim else None
        self.up_bottom = PatchExpand(dims[-1], dims[-1] // 2)
        self.up_project = nn.ModuleList(nn.Linear(dims[i + 1] // 2, dims[i]) for i in levels)  # DAE-Former's x1_linear
        self.skips = nn.ModuleList(CrossAttentionSkip(dims[i], heads) for i in levels)
        self.decoder = nn.ModuleList(blocks(dims[i], decoder_depth) for i in levels)
        self.expands = nn.ModuleList(
            PatchExpand(dims[i], dims[i] if i == 0 else dims[i] // 2, scale=strides[i]) for i in levels
        )
        self.full_res = FullResolutionSkip(in_chans, dims[0]) if full_res_skip else None
        self.head = nn.Conv2d(dims[0], num_classes, 1)
        self.apply(_init)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[B, C_in, H, W] -> the stages' maps [B, dims[i], H / (s * 2^i), W / (s * 2^i)] (s: stem_stride), finest
        first."""
        maps = []
        for embed, stage, norm in zip(self.embeds, self.encoder, self.encoder_norms):
            x, hw = embed(x)
            for block in stage:
                x = block(x, hw)
            x = to_map(norm(x), hw)
            maps.append(x)
        return maps

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, S, S] -> logits [B, num_classes, S, S]."""
        maps = self.encode(image)
        skips = [isim(maps) for isim in self.isim] if self.isim is not None else maps[:-1]
        bottom = maps[-1]
        x, hw = self.up_bottom(bottom.flatten(2).transpose(1, 2), (bottom.shape[2], bottom.shape[3]))
        for i in reversed(range(len(skips))):
            skip = skips[i].flatten(2).transpose(1, 2)
            x = self.skips[i](skip, self.up_project[i](x), hw)
            for block in self.decoder[i]:
                x = block(x, hw)
            x, hw = self.expands[i](x, hw)
        x = to_map(x, hw)
        return self.head(self.full_res(image, x) if self.full_res is not None else x)


def _init(module: nn.Module) -> None:
    """DAE-Former's decoder initialisation (Xavier-uniform linear and conv weights, zero biases), everywhere."""
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class UNetBaseline(SegmenterIO, nn.Module):
    """MONAI's 2-D UNet (residual units, strided convolutions; channels w, 2w, 4w, 8w) in the same pipeline, with
    MONAI's normalisation `norm` ("instance", MONAI's default, or "batch")."""

    arch = "unet"

    def __init__(self, in_chans: int, num_classes: int, img_size: int, class_names, width: int, norm: str = "instance"):
        super().__init__()
        self.in_chans, self.num_classes, self.img_size = in_chans, num_classes, img_size
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        channels = tuple(width * 2**i for i in range(4))
        check_choice("baseline_norm", norm, ("instance", "batch"))
        self.net = UNet(2, in_chans, num_classes, channels=channels, strides=(2, 2, 2), num_res_units=2, norm=norm)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)


def create(
    arch: str = "transdae",
    in_chans: int = 1,
    num_classes: int = 4,
    img_size: int = 64,
    class_names: list[str] | None = None,
    baseline_width: int = 16,
    baseline_norm: str = "instance",
    **transdae,
) -> nn.Module:
    """The pipeline's model target: TransDAE (`transdae`, with its own arguments) or MONAI's UNet (`unet`, channels
    w, 2w, 4w, 8w with w = `baseline_width`, normalised by `baseline_norm`). SwinUNETR would be the second
    baseline, but MONAI's needs einops, which the project does not install."""
    check_choice("arch", arch, ARCHS)
    common = dict(in_chans=in_chans, num_classes=num_classes, img_size=img_size, class_names=class_names)
    if arch == "transdae":
        return TransDAE(**common, **transdae)
    return UNetBaseline(width=baseline_width, norm=baseline_norm, **common)

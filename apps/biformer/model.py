"""BiFormer (Zhu, Wang, Ke, Zhang, Lau; CVPR 2023, arXiv 2303.08810): a 4-stage vision transformer whose
blocks mix tokens with Bi-Level Routing Attention (BRA, `common.attention.routing_bilevel`).

Architecture (official `models/biformer.py`, see ../shared/reference/app-facts.md §3):
- stem: Conv3x3 s2 (in -> C0/2) + BN + GELU + Conv3x3 s2 (-> C0) + BN (stride 4); between stages
  Conv3x3 s2 + BN.
- block (NCHW in): x += DWConv3x3(x) (position encoding); then channel-last pre-norm
  x += DropPath(BRA(LN(x))); x += DropPath(MLP(LN(x))), MLP = Linear(C, 3C) -> GELU -> Linear(3C, C);
  LayerNorm eps 1e-6; no layer scale (the released models use none).
- attention per stage: BRA with n_win regions per side and top-k routed regions; top-k -2 (the last
  stage) = full attention with LePE, the official `AttentionLePE` (8 heads, no qkv bias, scale head_dim^-0.5),
  built here as BRA with one region (n_win=1, top-k=1 is exactly full attention) and that scale.
- head: BN2d -> global average pool -> Linear.

Variants (timm names): biformer_tiny [2,2,8,2] x [64,128,256,512], biformer_small [4,4,18,4] x same,
biformer_base [4,4,18,4] x [96,192,384,768] (head_dim 32, n_win 7, top-k [1,4,16,-2], LCE kernel 5,
qk_dim = dim), and biformer_mini, a CPU-sized model for 28x28 inputs (3 stages, 0.55M parameters).

Shapes: forward(x [B, in_chans, H, W]) -> logits [B, num_classes]; forward_features -> [B, C_last, H/s, W/s]
(s = 32 for T/S/B, 16 for mini); forward_head(features, pre_logits=False) -> [B, num_classes].
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp
from torch import nn

from common.attention.routing_bilevel import BiLevelRoutingAttention
from common.errors import ConfigError, check_choice, check_range
from common.vision.models import create_classifier, init_vit_weights, register_timm_variants

GLOBAL = -2  # the official code's top-k for "full attention with LePE"


class BiFormerBlock(nn.Module):
    """Position-encoding DWConv + BRA (or global attention) + MLP, pre-norm, residual. [B, C, H, W] -> same."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_win: int,
        topk: int,
        mlp_ratio: float = 3.0,
        drop_path: float = 0.0,
        side_dwconv: int = 5,
        global_heads: int = 8,
    ):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        if topk == GLOBAL:
            heads = global_heads if dim % global_heads == 0 else num_heads
            self.attn = BiLevelRoutingAttention(dim, heads, n_win=1, topk=1, side_dwconv=side_dwconv, qkv_bias=False)
            self.attn.scale = (dim // heads) ** -0.5  # AttentionLePE scales by head_dim, BRA by the full qk_dim
        else:
            self.attn = BiLevelRoutingAttention(dim, num_heads, n_win=n_win, topk=topk, side_dwconv=side_dwconv)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(mlp_ratio * dim), act_layer=nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)  # channel-last for LN, attention and MLP
        x = x + self.drop_path(self.attn(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x.permute(0, 3, 1, 2)


def _stem(in_chans: int, dim: int, stride: int) -> nn.Sequential:
    """Overlapping conv stem: two 3x3 convs, the first with stride 2, the second with stride `stride` // 2."""
    return nn.Sequential(
        nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1),
        nn.BatchNorm2d(dim // 2),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, 3, stride=stride // 2, padding=1),
        nn.BatchNorm2d(dim),
    )


class BiFormer(nn.Module):
    """The BiFormer backbone and classifier (timm-style: forward_features / forward_head)."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        depths: tuple[int, ...] = (2, 2, 8, 2),
        embed_dims: tuple[int, ...] = (64, 128, 256, 512),
        head_dim: int = 32,
        n_win: int | tuple[int, ...] = 7,
        topks: tuple[int, ...] = (1, 4, 16, GLOBAL),
        mlp_ratio: float = 3.0,
        side_dwconv: int = 5,
        stem_stride: int = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        global_heads: int = 8,
        global_pool: str = "avg",
    ):
        """Args: `n_win` one value or one per stage; `topks` per stage (-2: full attention);
        `stem_stride` 4 (the paper) or 2 (small inputs); `img_size` is only checked (any size runs)."""
        super().__init__()
        stages = len(depths)
        n_wins = (n_win,) * stages if isinstance(n_win, int) else tuple(n_win)
        for key, value in (("embed_dims", embed_dims), ("topks", topks), ("n_win", n_wins)):
            if len(value) != stages:
                raise ConfigError(key, list(value), f"{stages} values (one per stage, as depths)")
        check_choice("stem_stride", stem_stride, (2, 4))
        check_range("img_size", img_size, stem_stride)
        check_choice("global_pool", global_pool, ("avg",))
        for i, (dim, topk, win) in enumerate(zip(embed_dims, topks, n_wins)):
            if dim % head_dim:
                raise ConfigError("head_dim", head_dim, f"a divisor of every embed dim (stage {i}: {dim})")
            if topk != GLOBAL and not 1 <= topk <= win * win:
                raise ConfigError("topks", list(topks), f"-2 or 1..n_win^2 per stage (stage {i}: n_win={win})")
        self.num_classes, self.num_features = num_classes, embed_dims[-1]
        self.depths, self.embed_dims, self.n_wins, self.topks = tuple(depths), tuple(embed_dims), n_wins, tuple(topks)
        self.downsample_layers = nn.ModuleList([_stem(in_chans, embed_dims[0], stem_stride)])
        for i in range(stages - 1):
            self.downsample_layers.append(
                nn.Sequential(
                    nn.Conv2d(embed_dims[i], embed_dims[i + 1], 3, stride=2, padding=1),
                    nn.BatchNorm2d(embed_dims[i + 1]),
                )
            )
        total = sum(depths)
        rates = [drop_path_rate * i / max(1, total - 1) for i in range(total)]  # stochastic depth grows with depth
        self.stages = nn.ModuleList()
        for i in range(stages):
            start = sum(depths[:i])
            blocks = [
                BiFormerBlock(
                    embed_dims[i],
                    embed_dims[i] // head_dim,
                    n_wins[i],
                    topks[i],
                    mlp_ratio,
                    rates[start + j],
                    side_dwconv,
                    global_heads,
                )  # fmt: skip
                for j in range(depths[i])
            ]
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.BatchNorm2d(embed_dims[-1])
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_vit_weights)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_chans, H, W] -> normalised last-stage map [B, C_last, H', W']."""
        for down, stage in zip(self.downsample_layers, self.stages):
            x = stage(down(x))
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """[B, C_last, H', W'] -> pooled [B, C_last] (pre_logits) or logits [B, num_classes]."""
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


VARIANTS = {
    "tiny": {"depths": (2, 2, 8, 2), "embed_dims": (64, 128, 256, 512)},
    "small": {"depths": (4, 4, 18, 4), "embed_dims": (64, 128, 256, 512)},
    "base": {"depths": (4, 4, 18, 4), "embed_dims": (96, 192, 384, 768)},
    # CPU model for 28x28 (Fashion-MNIST), the paper's stride-4 stem -> maps 7, 4, 2. Stage 1: the 7x7
    # map padded to 8x8, 4x4 regions of 2x2 tokens, each routed to 4 regions; stage 2: 2x2 regions of 2x2
    # tokens, top-2; stage 3: full attention. n_win 4 (not 7) in stage 1: the reference gather's backward
    # grows with n_win^4, which made n_win 7 ~1.5x slower per step on CPU (see apps/biformer/README.md).
    "mini": {
        "depths": (2, 2, 2), "embed_dims": (32, 64, 128), "head_dim": 16, "n_win": (4, 2, 1),
        "topks": (4, 2, GLOBAL), "stem_stride": 4, "global_heads": 4,
    },
}  # fmt: skip


register_timm_variants(
    __name__,
    lambda variant, **kwargs: BiFormer(**(VARIANTS[variant] | kwargs)),
    {f"biformer_{variant}": variant for variant in VARIANTS},
    "false: no BiFormer weights ship with this project",
)


def create(
    variant: str = "mini", num_classes: int = 10, in_chans: int = 3, img_size: int = 224, class_names=None, **kwargs
):
    """The pipeline's model target: `timm.create_model(f"biformer_{variant}", ...)` wrapped by ImageClassifier."""
    check_choice("variant", variant, VARIANTS)
    return create_classifier(
        f"biformer_{variant}",
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        class_names=class_names,
        **kwargs,
    )

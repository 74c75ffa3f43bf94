"""BiViT: a DeiT-style vision transformer whose blocks take the core's token mixer, in full precision or binary.

He, Lou, Zhang, Liu, Wu, Zhou, Zhuang, "BiViT: Extremely Compressed Binary Vision Transformers"
(ICCV 2023, arXiv 2211.07091). The backbone is DeiT (patch embedding, cls token, learned position
embedding, pre-norm blocks, LayerNorm, linear head); each block is the shared
`common.layers.TransformerBlock`, so `attention=<name>` swaps the token mixer.

`binary` picks what is binarised (cross-layer binarisation trains these as successive stages):
- "none": full precision (the teacher and the stage-1 starting point).
- "attention": the attention module: softmax-aware binarised attention map (`binary_sab`), sign(q, k, v),
  and the qkv/proj linears as `BinaryLinear` (1-bit weights with learnable channel scales, 1-bit inputs);
  the MLP stays full precision (stage 1).
- "all": the MLP's fc1/fc2 too (stage 2).
Patch embedding, cls/position embeddings, LayerNorms, biases and the head stay full precision, as is usual
for binary networks (first and last layers are a tiny share of the operations and hurt most when binary).

Registered with timm: `bivit_deit_tiny|small|base` (DeiT sizes, 224x224, patch 16) and `bivit_micro`
(28x28 single-channel, patch 4: sized for 2 CPU cores on Fashion-MNIST).
"""

from __future__ import annotations

from pathlib import Path

import torch
from timm.layers import PatchEmbed, trunc_normal_
from torch import nn

from apps.bivit.binary import BinaryLinear, binarize_linears
from common.attention import MECHANISMS, capabilities
from common.errors import ConfigError, check_choice, check_range
from common.layers import TransformerBlock
from common.vision.models import create_classifier, init_vit_weights, register_timm_variants

BINARY = ("none", "attention", "all")
BINARY_ATTENTION = "binary_sab"  # the core's softmax-aware binarised attention
ATTENTION_LINEARS = ("attn.qkv", "attn.proj")
MLP_LINEARS = ("mlp.fc1", "mlp.fc2")


def token_mixers() -> list[str]:
    """Core mechanisms usable here: plain [B, N, C] self-attention token mixers (the cls token has no 2-D place)."""
    return [n for n in MECHANISMS if capabilities(n).token_mixer and capabilities(n).layout == "tokens"]


class BiViT(nn.Module):
    """DeiT-style ViT with a swappable token mixer and BiViT binarisation.

    Args:
        num_classes: classes of the head.
        in_chans: image channels.
        img_size: square input side; a multiple of `patch_size`.
        patch_size: patch side (the patch embedding is a full-precision conv with this kernel and stride).
        embed_dim, depth, num_heads, mlp_ratio: transformer width, blocks, heads, MLP expansion.
        attention: core token mixer name (see `token_mixers()`); must be "binary_sab" when `binary` is not "none".
        attention_options: extra options of the mechanism (binary models get `binarize_qkv=True`).
        binary: "none" | "attention" | "all" (see the module docstring).
        binary_activations: 1-bit inputs to the binary linears (W1A1, BiViT); False gives W1A32.
        drop_rate: dropout before the head.
        drop_path_rate: stochastic depth, linearly increasing over the blocks (DeiT).
        qkv_bias: bias in the q/k/v projections.
        init_from: checkpoint the Lightning module loads when training starts (`apps.bivit.init.load_init`);
            kept as a path, never read on construction, so evaluation and exports rebuild without the file.
            Resolved to an absolute path here (a `runs/bivit/latest/...` link keeps the run it points to now).

    Shapes:
        x: [B, in_chans, img_size, img_size] -> logits [B, num_classes];
        forward_features: -> [B, 1 + (img_size / patch_size)^2, embed_dim].
    """

    def __init__(
        self,
        num_classes: int = 10,
        in_chans: int = 1,
        img_size: int = 28,
        patch_size: int = 4,
        embed_dim: int = 64,
        depth: int = 4,
        num_heads: int = 2,
        mlp_ratio: float = 4.0,
        attention: str = "softmax",
        attention_options: dict | None = None,
        binary: str = "none",
        binary_activations: bool = True,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        qkv_bias: bool = True,
        init_from: str | None = None,
    ):
        super().__init__()
        for key, value, low in (
            ("num_classes", num_classes, 2),
            ("in_chans", in_chans, 1),
            ("img_size", img_size, 1),
            ("patch_size", patch_size, 1),
            ("embed_dim", embed_dim, 1),
            ("depth", depth, 1),
            ("num_heads", num_heads, 1),
        ):
            check_range(key, value, low)
            if int(value) != value:
                raise ConfigError(key, value, f"an integer >= {low}")
        if img_size % patch_size:
            raise ConfigError("img_size", img_size, f"a multiple of patch_size={patch_size}")
        if embed_dim % num_heads:
            raise ConfigError("num_heads", num_heads, f"a divisor of embed_dim={embed_dim}")
        check_range("mlp_ratio", mlp_ratio, 0.0, low_inclusive=False)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_inclusive=False)
        check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        check_choice("binary", binary, BINARY)
        check_choice("attention", attention, token_mixers())
        options = dict(attention_options or {})
        if binary != "none":
            if attention != BINARY_ATTENTION:
                raise ConfigError(
                    "attention", attention, f"{BINARY_ATTENTION!r} when binary={binary!r} (softmax-aware binarisation)"
                )
            options.setdefault("binarize_qkv", True)  # BiViT's attention: sign(q), sign(k), sign(v), SAB map

        self.num_classes, self.in_chans, self.img_size, self.patch_size = num_classes, in_chans, img_size, patch_size
        self.embed_dim, self.attention, self.binary = embed_dim, attention, binary
        self.init_from = str(Path(init_from).expanduser().resolve()) if init_from else None
        self.num_prefix_tokens = 1

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_patches = self.patch_embed.num_patches
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]  # linear in depth (DeiT)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                embed_dim,
                num_heads,
                attention=attention,
                attention_options=options,
                mlp_ratio=mlp_ratio,
                drop_path=rate,
                qkv_bias=qkv_bias,
            )
            for rate in rates
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(embed_dim, num_classes)
        # DeiT's init: truncated normal (std 0.02) for the embeddings, then for the linears (unit LayerNorms)
        trunc_normal_(self.pos_embed, std=0.02)
        trunc_normal_(self.cls_token, std=0.02)
        self.apply(init_vit_weights)

        binary_paths = {"none": (), "attention": ATTENTION_LINEARS, "all": ATTENTION_LINEARS + MLP_LINEARS}[binary]
        for block in self.blocks:
            binarize_linears(block, binary_paths, binary_input=binary_activations)

    def no_weight_decay(self) -> set[str]:
        """DeiT's embeddings and BiViT's channel scales are not decayed (a decayed scale shrinks the binary weights)."""
        return {"pos_embed", "cls_token"} | {f"{n}.scale" for n in self.binary_layers()}

    def binary_layers(self) -> dict[str, BinaryLinear]:
        """Name -> BinaryLinear of every binarised linear layer."""
        return {n: m for n, m in self.named_modules() if isinstance(m, BinaryLinear)}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> normalised tokens [B, 1 + N, D] (cls token first)."""
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens [B, 1 + N, D] -> logits [B, num_classes] (or the cls feature [B, D] with pre_logits)."""
        x = self.head_drop(x[:, 0])
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# name -> architecture (DeiT: Touvron et al., ICML 2021, table 1); img/in_chans/classes default per variant
_IMAGENET = dict(patch_size=16, img_size=224, in_chans=3, num_classes=1000)
VARIANTS: dict[str, dict] = {
    "bivit_deit_tiny": dict(embed_dim=192, depth=12, num_heads=3, **_IMAGENET),
    "bivit_deit_small": dict(embed_dim=384, depth=12, num_heads=6, **_IMAGENET),
    "bivit_deit_base": dict(embed_dim=768, depth=12, num_heads=12, **_IMAGENET),
    "bivit_micro": dict(embed_dim=64, depth=4, num_heads=2, patch_size=4, img_size=28, in_chans=1, num_classes=10),
}

register_timm_variants(
    __name__,
    lambda variant, **kwargs: BiViT(**(VARIANTS[variant] | kwargs)),
    {name: name for name in VARIANTS},
    "False: train the full-precision model, then use init_from",
)


def create(
    variant: str = "micro", num_classes: int = 10, in_chans: int = 1, img_size: int = 28, class_names=None, **kwargs
):
    """The config's `_target_`: `timm.create_model(f"bivit_{variant}", ...)` wrapped by the shared ImageClassifier.

    The wrapper adds `example_inputs`/`export_spec`/class names for export and predict; the BiViT itself is
    `.net`. Hydra's list/dict configs are turned into plain containers.
    """
    check_choice("variant", variant, [name.removeprefix("bivit_") for name in VARIANTS])
    if kwargs.get("attention_options") is not None:
        kwargs["attention_options"] = dict(kwargs["attention_options"])
    return create_classifier(
        f"bivit_{variant}",
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        class_names=class_names,
        **kwargs,
    )

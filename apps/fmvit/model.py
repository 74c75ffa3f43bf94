"""FMViT: a multiple-frequency mixing Vision Transformer (Tan, Geng, Xie; arXiv 2311.05707), and its variants.

A hierarchical hybrid: a convolutional stem, then stages of convolutional fusion blocks (CFB, local,
high-frequency) and multi-frequency mixing blocks (FMB: a conv branch plus RLMHSA attention over
average-pooled copies of the map at several rates, concatenated and mixed, then a gMLP), BatchNorm
throughout, global pooling and a linear head. Training-time multi-branch convolutions fold into single
convolutions with `model.reparameterize()` (in place, idempotent); the export uses that deploy form.

Variants are registered with timm (`timm.create_model("fmvit_s", num_classes=10)` once `apps.fmvit` is
imported): `fmvit_t/s/b/l` for ImageNet-size inputs and `fmvit_cpu` for 28x28 Fashion-MNIST on CPU.
The widths and depths of t/s/b/l are OUR choice (Next-ViT-like, see apps/fmvit/README.md): the paper's
variant table could not be consulted and no code was released.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from apps.fmvit.blocks import CFB, FMB
from apps.fmvit.rep import ConvBN
from common.errors import ConfigError, check_choice, check_range
from common.vision.models import ImageClassifier, create_classifier, register_timm_variants

# Deploy-form parameters at 1000 classes: t 10.5M, s 25.4M, b 44.6M, l 56.9M, cpu 0.25M (10 classes).
# Stage layouts: one letter per block, C = CFB, F = FMB. `rates` are the FMB pooling rates per stage
# (1 = attention at the stage's own resolution), `down` whether the stage starts with a stride-2 conv.
# What the four ImageNet variants share: the stem, the pooling rates, the downsampling, the head width.
_IMAGENET = dict(stem=((32, 2), (64, 2)), rates=((), (2, 4), (1, 2), (1,)), down=(False, True, True, True), head_dim=32)
VARIANTS: dict[str, dict] = {
    "t": dict(
        **_IMAGENET,
        dims=(64, 128, 256, 512),
        layouts=("CC", "CF", "CCFCCF", "CF"),
        mlp_ratio=3.0,
    ),
    "s": dict(
        **_IMAGENET,
        dims=(96, 192, 384, 768),
        layouts=("CCC", "CCCF", "CCCCF" * 2, "CCF"),
        mlp_ratio=2.0,
    ),
    "b": dict(
        **_IMAGENET,
        dims=(96, 192, 384, 768),
        layouts=("CCC", "CCCF", "CCCCF" * 4, "CCF"),
        mlp_ratio=3.0,
    ),
    "l": dict(
        **_IMAGENET,
        dims=(96, 192, 384, 768),
        layouts=("CCC", "CCCF", "CCCCF" * 6, "CCF"),
        mlp_ratio=3.0,
    ),
    # CPU-sized, for 28x28 grey images: maps 28 -> 14 (stem) -> 7 -> 4; a 3-epoch Fashion-MNIST run fits
    # in minutes on 2 cores (apps/fmvit/README.md).
    "cpu": dict(
        stem=((24, 2),),
        dims=(48, 96),
        layouts=("CCF", "CF"),
        rates=((1, 2), (1,)),
        down=(True, True),
        head_dim=16,
        mlp_ratio=2.0,
    ),
}


class FMViT(nn.Module):
    """FMViT classifier. `forward(x[B, in_chans, H, W]) -> logits [B, num_classes]`.

    Args:
        stem: ((channels, stride), ...) of the 3x3 ConvBN-ReLU stem convolutions.
        dims: width of each stage.
        layouts: blocks of each stage as letters, "C" = CFB, "F" = FMB.
        rates: FMB pooling rates of each stage (its low-frequency bands).
        down: whether each stage starts with a stride-2 3x3 ConvBN (else a 1x1 ConvBN when the width changes).
        head_dim: channels per attention head and per conv group of the local mixers.
        mlp_ratio: gMLP hidden width / block width.
        mlp_groups: group counts of the gMLP's parallel 1x1 branches (1 = dense).
        attn_ratio: RLMHSA width / block width, per rate.
        num_classes: classes of the head (0: no head, forward returns pooled features).
        in_chans, img_size: input channels and (square) size; used for example inputs and checks.
        drop_rate: dropout before the head; drop_path_rate: stochastic depth, linear over the blocks.
        deploy: build the re-parameterised (inference) form directly.

    Shapes: forward_features [B, in_chans, H, W] -> [B, dims[-1], H/s, W/s]; forward_head -> [B, num_classes].
    """

    def __init__(
        self,
        stem,
        dims,
        layouts,
        rates,
        down,
        head_dim: int = 32,
        mlp_ratio: float = 3.0,
        mlp_groups=(1, 4),
        attn_ratio: float = 0.5,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        deploy: bool = False,
    ):
        super().__init__()
        check_range("num_classes", num_classes, 0)
        check_range("in_chans", in_chans, 1)
        check_range("img_size", img_size, 8)
        check_range("drop_rate", drop_rate, 0.0, 1.0, high_inclusive=False)
        check_range("drop_path_rate", drop_path_rate, 0.0, 1.0, high_inclusive=False)
        if not len(dims) == len(layouts) == len(rates) == len(down) or any(set(s) - {"C", "F"} for s in layouts):
            raise ConfigError("layouts", layouts, "one string of C (CFB) / F (FMB) per stage, as many as dims")
        if any(int(r) < 1 for stage_rates in rates for r in stage_rates):
            raise ConfigError("rates", rates, "per stage, a list of pooling rates >= 1")
        self.num_classes, self.in_chans, self.img_size = int(num_classes), int(in_chans), int(img_size)
        self.deploy = deploy
        self.num_features = self.head_hidden_size = dims[-1]

        layers, cin = [], in_chans
        for width, stride in stem:
            layers += [ConvBN(cin, width, 3, stride, deploy=deploy), nn.ReLU()]
            cin = width
        self.stem = nn.Sequential(*layers)

        rates_dp = torch.linspace(0, drop_path_rate, sum(len(s) for s in layouts)).tolist()
        self.stages, i = nn.ModuleList(), 0
        for dim, layout, stage_rates, stride2 in zip(dims, layouts, rates, down):
            blocks: list[nn.Module] = []
            if stride2:
                blocks.append(ConvBN(cin, dim, 3, 2, deploy=deploy))
            elif cin != dim:
                blocks.append(ConvBN(cin, dim, 1, deploy=deploy))
            for kind in layout:
                common = dict(head_dim=head_dim, mlp_ratio=mlp_ratio, mlp_groups=mlp_groups, drop_path=rates_dp[i])
                if kind == "C":
                    blocks.append(CFB(dim, deploy=deploy, **common))
                else:
                    blocks.append(FMB(dim, stage_rates, attn_ratio=attn_ratio, deploy=deploy, **common))
                i += 1
            self.stages.append(nn.Sequential(*blocks))
            cin = dim
        self.norm = nn.BatchNorm2d(cin)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(cin, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: Tensor) -> Tensor:
        """[B, in_chans, H, W] -> feature map [B, C, h, w] (after the final BatchNorm)."""
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Feature map [B, C, h, w] -> pooled [B, C] (pre_logits) or logits [B, num_classes]."""
        x = self.head_drop(x.mean(dim=(2, 3)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    @torch.no_grad()
    def reparameterize(self) -> FMViT:
        """Fold every training-time multi-branch conv and its BatchNorms into single convs, in place.

        Idempotent; exact in eval mode (the folded BatchNorms use their running statistics). Returns self.
        """
        for module in list(self.modules()):
            if module is not self and hasattr(module, "reparameterize"):
                module.reparameterize()
        self.deploy = True
        return self


def build_fmvit(
    variant: str = "cpu",
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int = 224,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
    deploy: bool = False,
    **overrides,
) -> FMViT:
    """The bare FMViT `variant` (one of VARIANTS); `overrides` replace entries of the variant's table."""
    check_choice("variant", variant, VARIANTS)
    unknown = sorted(set(overrides) - set(VARIANTS[variant]) - {"mlp_groups", "attn_ratio"})
    if unknown:
        raise ConfigError(unknown[0], overrides[unknown[0]], "a key of the variant table (apps.fmvit.model.VARIANTS)")
    return FMViT(
        **{**VARIANTS[variant], **overrides},
        num_classes=num_classes,
        in_chans=in_chans,
        img_size=img_size,
        drop_rate=drop_rate,
        drop_path_rate=drop_path_rate,
        deploy=deploy,
    )


class FMViTClassifier(ImageClassifier):
    """The shared vision wrapper (example_inputs, export_spec, class names) plus FMViT's `reparameterize()`,
    which the export calls (common.pipeline.export.deploy_form) so that the exported graph and weights
    are the deploy form. Shapes: image [N, C, H, W] -> logits [N, num_classes]."""

    @torch.no_grad()
    def reparameterize(self) -> FMViTClassifier:
        self.net.reparameterize()
        return self


def create(
    variant: str = "cpu",
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    class_names=None,
    deploy: bool = False,
    **kwargs,
) -> FMViTClassifier:
    """The pipeline's model target: `timm.create_model(f"fmvit_{variant}", ...)` in the shared wrapper.

    `deploy=True` builds the re-parameterised form directly (what an export's model.yaml asks for).
    """
    check_choice("variant", variant, VARIANTS)
    clf = create_classifier(
        f"fmvit_{variant}", num_classes=num_classes, in_chans=in_chans, img_size=img_size, deploy=deploy, **kwargs
    )
    return FMViTClassifier(clf.net, num_classes, in_chans, img_size, class_names)


register_timm_variants(
    __name__, build_fmvit, {f"fmvit_{variant}": variant for variant in VARIANTS}, "False: FMViT has no released weights"
)

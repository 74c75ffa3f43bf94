"""The pipeline's side of an image classifier: a timm model wrapped with `example_inputs`/`export_spec`.

An app registers its variants with timm (`register_timm_variants`) and builds one for the pipeline with
`create_classifier("<timm name>", num_classes=..., in_chans=..., img_size=..., class_names=...)`. The
class names ride in the model config (the data module's `model_kwargs()`), so an export's `model.yaml`
and `export.json` (`spec.classes`) carry them to predict.
"""

from __future__ import annotations

from collections.abc import Callable

import timm
import torch
from timm.layers import trunc_normal_
from timm.models import register_model
from torch import nn

from common.errors import ConfigError, check_range
from common.vision.transforms import MEAN, STD


class ImageClassifier(nn.Module):
    """`net` (a timm classifier) plus what export and predict need.

    Shapes: forward(image [N, in_chans, img_size, img_size] float32, normalised as in training)
    -> logits [N, num_classes].
    """

    def __init__(self, net: nn.Module, num_classes: int, in_chans: int, img_size: int, class_names=None):
        super().__init__()
        self.net = net
        self.num_classes, self.in_chans, self.img_size = int(num_classes), int(in_chans), int(img_size)
        names = [str(c) for c in class_names] if class_names else [str(i) for i in range(self.num_classes)]
        if len(names) != self.num_classes:
            raise ConfigError("class_names", class_names, f"{self.num_classes} names (num_classes)")
        self.class_names = names

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def forward_features(self, image: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(image)

    def no_weight_decay(self) -> set[str]:
        inner = self.net.no_weight_decay() if hasattr(self.net, "no_weight_decay") else set()
        return {f"net.{n}" for n in inner}

    def example_inputs(self) -> tuple[torch.Tensor]:
        """Two random normalised images [2, C, H, W] (batch 2: the batch dim is exported as dynamic)."""
        g = torch.Generator().manual_seed(0)
        return (torch.rand(2, self.in_chans, self.img_size, self.img_size, generator=g) * 2 - 1,)

    def export_spec(self) -> dict:
        return {
            "inputs": {"image": {"shape": ["N", self.in_chans, self.img_size, self.img_size], "dtype": "float32"}},
            "outputs": {"logits": {"shape": ["N", self.num_classes], "dtype": "float32"}},
            "classes": list(self.class_names),
            "normalize": {"mean": MEAN, "std": STD, "range": "pixels / 255, then (x - mean) / std"},
        }


def init_vit_weights(module: nn.Module) -> None:
    """ViT/DeiT init for `model.apply(init_vit_weights)`: truncated normal (std 0.02) linear weights, zero
    biases, unit LayerNorms; every other layer keeps its own init.

    Not timm's `init_weights_vit_timm`: that one also calls `reset_parameters()` on every other layer (so
    convolutions are drawn again and a fixed seed gives other weights) and `init_weights()` on
    layers that have one, and leaves LayerNorms to their reset.
    """
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        if module.weight is not None:  # None when elementwise_affine=False
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def create_classifier(
    model_name: str, num_classes: int, in_chans: int, img_size: int, class_names=None, **kwargs
) -> ImageClassifier:
    """`timm.create_model(model_name, num_classes, in_chans, img_size, **kwargs)` wrapped for the pipeline."""
    check_range("num_classes", num_classes, 1)
    check_range("in_chans", in_chans, 1)
    check_range("img_size", img_size, 1)
    if model_name not in timm.list_models():
        raise ConfigError("variant", model_name, "a model registered with timm (import its app first)")
    net = timm.create_model(model_name, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    return ImageClassifier(net, num_classes, in_chans, img_size, class_names)


TIMM_BOOKKEEPING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")  # create_model passes these along


def register_timm_variants(module: str, build: Callable[..., nn.Module], variants: dict[str, str], no_weights: str):
    """Register each `timm name -> variant` with timm, so `timm.create_model(name, **kwargs)` calls
    `build(variant, **kwargs)`. Nothing can be downloaded here: `pretrained=True` raises a ConfigError that
    says `no_weights`. `module` is the app's model module (timm files the names under it)."""

    def entry_for(timm_name: str, variant: str):
        def entry(pretrained: bool = False, **kwargs) -> nn.Module:
            if pretrained:
                raise ConfigError("pretrained", pretrained, no_weights)
            for key in TIMM_BOOKKEEPING:
                kwargs.pop(key, None)
            return build(variant, **kwargs)

        entry.__name__ = entry.__qualname__ = timm_name
        entry.__module__ = module
        entry.__doc__ = f"{timm_name}: variant {variant!r} of {module}."
        return entry

    for timm_name, variant in variants.items():
        register_model(entry_for(timm_name, variant))

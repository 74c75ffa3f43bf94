"""Backbone (timm, features only) and the channel mapper that turns its stages into the DETR's levels."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from common.errors import ConfigError, DatasetError, check_range


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by a FrozenBatchNorm2d with the same statistics (DETRs' small-batch choice)."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                frozen.weight.copy_(child.weight.detach())
                frozen.bias.copy_(child.bias.detach())
                frozen.running_mean.copy_(child.running_mean)
                frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A local state dict from .safetensors or a torch file (loaded with weights_only=True: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            path, "a backbone state dict (.safetensors or .pth/.pt)", "backbone_weights", "weights not found"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or pickled-object file: say which one
        raise DatasetError(path, "a backbone state dict", "backbone_weights", f"cannot read weights ({err})") from err
    for key in ("state_dict", "model"):  # common checkpoint wrappers
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DatasetError(path, "a flat dict of tensors", "backbone_weights", "not a state dict")
    return state


class Backbone(nn.Module):
    """A timm model as a feature pyramid: `timm.create_model(name, features_only=True, out_indices=...)`.

    Args:
        name: any timm model with `features_only` support (resnet18, resnet50, convnext_tiny, ...).
        out_indices: which stages to return (ResNet: 1..4 = strides 4..32; DETRs use (2, 3, 4) = res3-5).
        weights: optional path of a local state dict for the full timm model (classifier keys are ignored);
            nothing downloads.
        frozen_bn: swap BatchNorm for FrozenBatchNorm2d (as the DETR papers do with pretrained weights;
            leave False when training from scratch, where BN statistics must be learnt).

    Shapes: images [B, 3, H, W] -> list of [B, C_i, H / s_i, W / s_i]; `channels` and `strides` describe them.
    """

    def __init__(self, name: str = "resnet50", out_indices=(2, 3, 4), weights: str | None = None, frozen_bn=False):
        super().__init__()
        if name not in timm.list_models():
            raise ConfigError("backbone", name, "a timm model name, e.g. resnet18 or resnet50")
        try:
            self.body = timm.create_model(name, features_only=True, out_indices=tuple(out_indices), pretrained=False)
        except (IndexError, ValueError, RuntimeError) as err:
            raise ConfigError("out_indices", list(out_indices), f"stage indices that {name} has ({err})") from err
        if weights is not None:
            self.load_weights(weights)
        if frozen_bn:
            freeze_batchnorm(self.body)
        self.channels = list(self.body.feature_info.channels())
        self.strides = list(self.body.feature_info.reduction())

    def load_weights(self, path: str | Path) -> None:
        """Load a timm state dict; every feature parameter must be present with its shape."""
        state = read_state_dict(path)
        own = self.body.state_dict()
        # features_only models rename nothing for ResNets but drop the head; other models may prefix names
        missing = [k for k in own if k not in state]
        wrong = [k for k in own if k in state and state[k].shape != own[k].shape]
        if missing or wrong:
            raise DatasetError(
                path,
                "a state dict of the same timm architecture as `backbone`",
                "backbone_weights",
                f"weights do not fit: {len(missing)} missing (e.g. {missing[:3]}), {len(wrong)} of another shape "
                f"(e.g. {wrong[:3]})",
            )
        self.body.load_state_dict({k: state[k] for k in own})

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        return self.body(images)


class ChannelMapper(nn.Module):
    """Project each backbone stage to `dim` (1x1 conv + GroupNorm) and add stride-2 levels up to `num_levels`.

    The extra levels are 3x3 stride-2 convs (+ GroupNorm), the first on the last backbone stage, the next on
    the previous extra level, as in Deformable DETR.

    Shapes: list of [B, C_i, H_i, W_i] -> list of `num_levels` [B, dim, H_l, W_l].
    """

    def __init__(self, in_channels: list[int], dim: int = 256, num_levels: int = 4, groups: int = 32):
        super().__init__()
        check_range("num_levels", num_levels, len(in_channels))
        if dim % groups:
            raise ConfigError("hidden_dim", dim, f"a multiple of the GroupNorm groups ({groups})")
        self.lateral = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(groups, dim)) for c in in_channels
        )
        extra, last = [], in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            extra.append(nn.Sequential(nn.Conv2d(last, dim, 3, stride=2, padding=1), nn.GroupNorm(groups, dim)))
            last = dim
        self.extra = nn.ModuleList(extra)
        for conv in self.modules():
            if isinstance(conv, nn.Conv2d):
                nn.init.xavier_uniform_(conv.weight, gain=1)
                nn.init.zeros_(conv.bias)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        levels = [proj(f) for proj, f in zip(self.lateral, features)]
        x = features[-1]
        for conv in self.extra:
            x = conv(x)
            levels.append(x)
        return levels

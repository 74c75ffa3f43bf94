"""Structural re-parameterisation primitives for FMViT: multi-branch convolutions (+BatchNorm) at training
time, one plain convolution with bias at deploy time.

Every primitive here takes `deploy: bool` (build the deploy form directly, e.g. to load deploy weights)
and has `reparameterize()`, which folds its training-time branches in place and is idempotent. The
folding is exact in eval mode (BatchNorm with running statistics is an affine map per channel).

- `ConvBN`: conv -> BN, folded into one conv (stem, downsampling).
- `RepConv1x1`: FMViT's convolutional multi-group reparameterisation (the layer of its gMLP): parallel
  1x1 convolutions with different group counts, each followed by BN, summed; an optional pre-norm BN
  before them. A grouped 1x1 conv is a block-diagonal dense 1x1 conv, so all branches add into one.
- `RepConvKxK`: RepVGG-style local mixer: BN(KxK grouped conv) + BN(1x1 grouped conv) + BN(x), one KxK conv.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from common.errors import ConfigError


def fuse_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """Weight and bias of the single conv equal to `bn(conv(x))` in eval mode.

    Shapes: conv.weight [Cout, Cin/g, k, k] -> ([Cout, Cin/g, k, k], [Cout]).
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # [Cout]
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    return conv.weight * scale[:, None, None, None], bn.bias + (bias - bn.running_mean) * scale


def dense_from_grouped(weight: Tensor, groups: int) -> Tensor:
    """A grouped conv kernel as the equivalent dense kernel (block-diagonal, zeros between the blocks).

    Shapes: [Cout, Cin/g, k, k] -> [Cout, Cin, k, k].
    """
    if groups == 1:
        return weight
    cout, cin_g, k1, k2 = weight.shape
    out_g = cout // groups
    dense = weight.new_zeros(cout, cin_g * groups, k1, k2)
    for g in range(groups):
        dense[g * out_g : (g + 1) * out_g, g * cin_g : (g + 1) * cin_g] = weight[g * out_g : (g + 1) * out_g]
    return dense


def _check_groups(key: str, groups, *channels: int) -> tuple[int, ...]:
    groups = tuple(int(g) for g in groups)
    if not groups or any(g < 1 or any(c % g for c in channels) for g in groups):
        raise ConfigError(key, groups, f"a non-empty list of group counts dividing the channels {channels}")
    return groups


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout))


class ConvBN(nn.Module):
    """Conv(k, stride, groups) -> BatchNorm; deploy: one conv with bias. x [B, Cin, H, W] -> [B, Cout, H/s, W/s]."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, deploy: bool = False):
        super().__init__()
        self.deploy = deploy
        if deploy:
            self.fused = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=True)
        else:
            self.branch = _conv_bn(cin, cout, k, stride, groups)

    def forward(self, x: Tensor) -> Tensor:
        return self.fused(x) if self.deploy else self.branch(x)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deploy:
            return
        conv, bn = self.branch
        w, b = fuse_conv_bn(conv, bn)
        self.fused = nn.Conv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, groups=conv.groups
        ).to(w)
        self.fused.weight.copy_(w)
        self.fused.bias.copy_(b)
        del self.branch
        self.deploy = True


class RepConv1x1(nn.Module):
    """Convolutional multi-group reparameterisation: sum_g BN_g(Conv1x1_groups=g(BN_in(x))).

    Training: one branch per entry of `groups` (1 = the dense 1x1 conv; 2, 4, ... = grouped 1x1 convs
    that mix channels only within groups, a different inductive bias per branch), each with its own BN,
    summed; `pre_norm=True` puts a BN before them (the block's normalisation, foldable because the conv
    has no padding). Deploy: one dense 1x1 conv with bias.

    Shapes: x [B, Cin, H, W] -> [B, Cout, H, W].
    """

    def __init__(self, cin: int, cout: int, groups=(1, 4), pre_norm: bool = False, deploy: bool = False):
        super().__init__()
        self.groups = _check_groups("groups", groups, cin, cout)
        self.deploy, self.pre_norm = deploy, pre_norm
        if deploy:
            self.fused = nn.Conv2d(cin, cout, 1, bias=True)
        else:
            self.norm = nn.BatchNorm2d(cin) if pre_norm else nn.Identity()
            self.branches = nn.ModuleList(_conv_bn(cin, cout, 1, groups=g) for g in self.groups)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.fused(x)
        x = self.norm(x)
        out = self.branches[0](x)
        for branch in self.branches[1:]:
            out = out + branch(x)
        return out

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deploy:
            return
        weight, bias = 0.0, 0.0
        for branch, g in zip(self.branches, self.groups):
            w, b = fuse_conv_bn(*branch)
            weight, bias = weight + dense_from_grouped(w, g), bias + b
        if self.pre_norm:
            # conv(s * x + t) = (W * s) x + W t : fold the input BN's per-channel affine map into the conv.
            s = self.norm.weight / torch.sqrt(self.norm.running_var + self.norm.eps)
            t = self.norm.bias - self.norm.running_mean * s
            bias = bias + weight[:, :, 0, 0] @ t
            weight = weight * s[None, :, None, None]
        self.fused = nn.Conv2d(weight.shape[1], weight.shape[0], 1, bias=True).to(weight)
        self.fused.weight.copy_(weight)
        self.fused.bias.copy_(bias)
        del self.norm, self.branches
        self.deploy = True


class RepConvKxK(nn.Module):
    """RepVGG-style grouped KxK conv: BN(KxK) + BN(1x1) + BN(identity), all with `groups` groups, stride 1.

    Deploy: one KxK grouped conv with bias (the 1x1 kernel is padded to the KxK centre, the identity is a
    centred one-hot kernel per channel).

    Shapes: x [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, channels: int, k: int = 3, groups: int = 1, deploy: bool = False):
        super().__init__()
        if k % 2 == 0 or k < 1:
            raise ConfigError("kernel_size", k, "an odd integer >= 1")
        _check_groups("groups", (groups,), channels)
        self.channels, self.k, self.groups, self.deploy = channels, k, groups, deploy
        if deploy:
            self.fused = nn.Conv2d(channels, channels, k, 1, k // 2, groups=groups, bias=True)
        else:
            self.conv_k = _conv_bn(channels, channels, k, groups=groups)
            self.conv_1 = _conv_bn(channels, channels, 1, groups=groups) if k > 1 else None
            self.identity = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        if self.deploy:
            return self.fused(x)
        out = self.conv_k(x) + self.identity(x)
        return out + self.conv_1(x) if self.conv_1 is not None else out

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deploy:
            return
        w, b = fuse_conv_bn(*self.conv_k)
        pad = self.k // 2
        if self.conv_1 is not None:
            w1, b1 = fuse_conv_bn(*self.conv_1)
            w, b = w + nn.functional.pad(w1, (pad, pad, pad, pad)), b + b1
        # identity as a conv: per output channel, a one-hot centre tap on its own input channel in the group
        cin_g = self.channels // self.groups
        eye = w.new_zeros(self.channels, cin_g, self.k, self.k)
        eye[torch.arange(self.channels), torch.arange(self.channels) % cin_g, pad, pad] = 1.0
        bn = self.identity
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        w = w + eye * scale[:, None, None, None]
        b = b + bn.bias - bn.running_mean * scale
        self.fused = nn.Conv2d(self.channels, self.channels, self.k, 1, pad, groups=self.groups).to(w)
        self.fused.weight.copy_(w)
        self.fused.bias.copy_(b)
        del self.conv_k, self.conv_1, self.identity
        self.deploy = True

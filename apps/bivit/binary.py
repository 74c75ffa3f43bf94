"""BiViT's binary linear layer: 1-bit weights with learnable channel-wise scales, 1-bit activations.

He et al., "BiViT: Extremely Compressed Binary Vision Transformers" (ICCV 2023, arXiv 2211.07091),
"Parameterized Weight Scales": W_b = alpha * sign(W - mean_row(W)) with a learnable alpha per output
channel, initialised to mean_row(|W - mean_row(W)|) (the XNOR-Net scale of the pretrained weights).
Inputs are binarised with sign and the clipped straight-through estimator (the core's `binarize_sign`:
forward sign, backward identity where |x| < 1, else 0), as the official `BinaryQuantizer`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from common.attention.binary_sab import binarize_sign


class BinaryLinear(nn.Linear):
    """Linear layer with binary weights (+-alpha per output channel) and, optionally, binary inputs.

    The latent full-precision `weight` is what the optimiser updates; forward uses
    `binary_weight() = scale * sign(weight - weight.mean(1))`. The bias stays full precision (one add per
    output, as in the official code). Keys `weight`/`bias` match `nn.Linear`, so a full-precision state
    dict loads into it; the extra `scale` is then set from the loaded weights with `reset_scale()`.

    Args:
        in_features, out_features, bias: as `nn.Linear`.
        binary_input: binarise the input with sign + clipped STE (W1A1); False gives W1A32.

    Shapes:
        x: [..., in_features] -> [..., out_features]; scale: [out_features, 1].
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, binary_input: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.binary_input = binary_input
        self.scale = nn.Parameter(torch.empty(out_features, 1))
        self.reset_scale()

    @torch.no_grad()
    def reset_scale(self) -> None:
        """scale <- mean |W - mean_row(W)| per output channel (the L1-optimal scale for sign(W_c))."""
        centred = self.weight - self.weight.mean(1, keepdim=True)
        self.scale.copy_(centred.abs().mean(1, keepdim=True).clamp_min(1e-8))

    def binary_weight(self) -> torch.Tensor:
        """[out, in] weights in {-scale_o, +scale_o}; gradients reach `weight` (STE) and `scale`."""
        centred = self.weight - self.weight.mean(1, keepdim=True)
        return self.scale * binarize_sign(centred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.binary_input:
            x = binarize_sign(x)
        return F.linear(x, self.binary_weight(), self.bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", binary_input={self.binary_input}"

    @classmethod
    def from_linear(cls, linear: nn.Linear, binary_input: bool = True) -> BinaryLinear:
        """A BinaryLinear holding `linear`'s weights (copied) with the scale set from them."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, binary_input)
        layer = layer.to(device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.reset_scale()
        return layer


def binarize_linears(module: nn.Module, names: tuple[str, ...], binary_input: bool = True) -> list[str]:
    """Replace the `nn.Linear` children of `module` named in `names` (dotted paths) by BinaryLinear, in place.

    Returns the replaced paths. A path that is missing or not an nn.Linear raises ValueError (a bug in the
    caller, not a user error).
    """
    replaced = []
    for path in names:
        parent_path, _, leaf = path.rpartition(".")
        parent = module.get_submodule(parent_path) if parent_path else module
        child = getattr(parent, leaf, None)
        if not isinstance(child, nn.Linear) or isinstance(child, BinaryLinear):
            raise ValueError(f"{path}: expected a full-precision nn.Linear, found {type(child).__name__}")
        setattr(parent, leaf, BinaryLinear.from_linear(child, binary_input))
        replaced.append(path)
    return replaced

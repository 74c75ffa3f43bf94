"""Weight memory and operations of a (binary) model against its full-precision counterpart.

Conventions (those of Bi-Real Net / ReActNet / BiViT's tables):
- FLOPs are multiply-accumulates (MACs) of full-precision layers; BOPs are MACs whose two operands are
  both 1-bit (XNOR + popcount); "OPs" = FLOPs + BOPs / 64.
- Counted: nn.Linear / BinaryLinear, nn.Conv2d, and the two attention matmuls (q k^T and attn v: N^2 C
  MACs each per image) of the softmax and binary_sab mechanisms. A BinaryLinear with 1-bit inputs counts
  BOPs; with full-precision inputs (W1A32) its MACs stay FLOPs (no XNOR possible). binary_sab's matmuls are
  BOPs when it binarises q, k, v (q, k in {-1, 1}; the map in {0, 1} against v in {-1, 1}).
- Not counted (as in those tables): softmax, LayerNorm, GELU, additions, the sign functions, the scales.
- Weight memory: 32 bits per full-precision parameter; a BinaryLinear's weight costs 1 bit per entry,
  its channel scales and bias 32 bits each. The full-precision reference has no scales.
"""

from __future__ import annotations

import torch
from torch import nn

from apps.bivit.binary import BinaryLinear
from common.attention.binary_sab import BinarySoftmaxAttention
from common.attention.softmax import SoftmaxAttention
from common.utils.modes import eval_mode

FP_BITS = 32
BOPS_PER_OP = 64


def weight_bits(model: nn.Module) -> dict:
    """{"bits", "fp32_bits", "megabytes", "fp32_megabytes", "compression"} of the model's parameters."""
    bits = fp_bits = 0
    binary_params = set()
    for module in model.modules():
        if isinstance(module, BinaryLinear):
            binary_params |= {id(module.weight), id(module.scale)}
            bits += module.weight.numel() + FP_BITS * module.scale.numel()
            fp_bits += FP_BITS * module.weight.numel()
    for p in model.parameters():
        if id(p) not in binary_params:
            bits += FP_BITS * p.numel()
            fp_bits += FP_BITS * p.numel()
    return {
        "bits": bits,
        "fp32_bits": fp_bits,
        "megabytes": bits / 8 / 2**20,
        "fp32_megabytes": fp_bits / 8 / 2**20,
        "compression": fp_bits / bits,
    }


def _attention_macs(module: nn.Module, x: torch.Tensor) -> tuple[int, bool] | None:
    """(MACs of q k^T and attn v for input x [B, N, C], binary?) or None for a mechanism not counted here."""
    if not isinstance(module, (SoftmaxAttention, BinarySoftmaxAttention)):
        return None
    batch, tokens, channels = x.shape
    return 2 * batch * tokens * tokens * channels, bool(getattr(module, "binarize_qkv", False))


def operations(model: nn.Module, *inputs: torch.Tensor) -> dict:
    """{"flops", "bops", "ops", "fp_flops", "speedup", "uncounted"} per call of `model(*inputs)`.

    `fp_flops`: the same MACs all in full precision (the model before binarisation); `ops` = flops + bops/64;
    `speedup` = fp_flops / ops; `uncounted`: token mixers whose matmuls are not counted (other mechanisms).
    """
    totals = {"flops": 0, "bops": 0}
    uncounted: list[str] = []

    def add(macs: int, binary: bool) -> None:
        totals["bops" if binary else "flops"] += int(macs)

    def linear_hook(module, args, out):
        add(args[0].numel() * module.out_features, isinstance(module, BinaryLinear) and module.binary_input)

    def conv_hook(module, args, out):
        add(out.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1], False)

    def attention_hook(name):
        def hook(module, args, out):
            counted = _attention_macs(module, args[0])
            if counted is None:
                uncounted.append(name)
            else:
                add(*counted)

        return hook

    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(linear_hook))
        elif isinstance(module, nn.Conv2d):
            handles.append(module.register_forward_hook(conv_hook))
        elif name.endswith(".attn"):  # the token mixer of a TransformerBlock
            handles.append(module.register_forward_hook(attention_hook(name)))
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    fp_flops = totals["flops"] + totals["bops"]
    ops = totals["flops"] + totals["bops"] / BOPS_PER_OP
    return {**totals, "ops": ops, "fp_flops": fp_flops, "speedup": fp_flops / ops, "uncounted": uncounted}


def complexity(model: nn.Module, *inputs: torch.Tensor) -> dict:
    """Weight memory and per-image operations; inputs default to one image of `model.example_inputs()`."""
    if not inputs:
        inputs = tuple(t[:1] for t in model.example_inputs())
    with eval_mode(model):
        return {"memory": weight_bits(model), "operations": operations(model, *inputs)}


def main() -> None:
    """`python -m apps.bivit.complexity`: the table of the README (default micro config and DeiT-Tiny, per image)."""
    from apps.bivit.model import BiViT

    configs = {
        "micro (app default: patch 7, 64 wide, 4 blocks)": dict(patch_size=7, embed_dim=64, depth=4, num_heads=2),
        "deit_tiny (224x224, 1000 classes)": dict(
            img_size=224, in_chans=3, num_classes=1000, patch_size=16, embed_dim=192, depth=12, num_heads=3
        ),
    }
    print("| model | binary | weights (MB) | compression | FLOPs (M) | BOPs (M) | OPs (M) | OPs saving |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, arch in configs.items():
        for binary in ("none", "attention", "all"):
            attention = "softmax" if binary == "none" else "binary_sab"
            model = BiViT(**arch, attention=attention, binary=binary)
            size = arch.get("img_size", 28)
            x = torch.randn(1, arch.get("in_chans", 1), size, size)
            c = complexity(model, x)
            mem, ops = c["memory"], c["operations"]
            print(
                f"| {name} | {binary} | {mem['megabytes']:.3f} | {mem['compression']:.1f}x | {ops['flops'] / 1e6:.2f} "
                f"| {ops['bops'] / 1e6:.2f} | {ops['ops'] / 1e6:.2f} | {ops['speedup']:.1f}x |"
            )


if __name__ == "__main__":
    main()

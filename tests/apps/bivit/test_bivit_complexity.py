"""Weight memory and BOPs/FLOPs on layers whose counts are known by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from apps.bivit.binary import BinaryLinear
from apps.bivit.complexity import complexity, operations, weight_bits
from apps.bivit.model import BiViT


def test_one_binary_linear_by_hand():
    model = nn.Sequential(BinaryLinear(8, 4))
    ops = operations(model, torch.randn(1, 3, 8))
    assert ops["bops"] == 3 * 8 * 4 and ops["flops"] == 0  # 3 tokens x 8 inputs x 4 outputs, all 1-bit
    assert ops["ops"] == pytest.approx(96 / 64) and ops["fp_flops"] == 96
    memory = weight_bits(model)
    assert memory["bits"] == 32 * 1 + 4 * 32 + 4 * 32  # 1-bit weights + fp32 scales + fp32 bias
    assert memory["fp32_bits"] == (32 + 4) * 32  # the nn.Linear it replaces: weights + bias, no scales


def test_w1a32_layer_counts_flops_not_bops():
    model = nn.Sequential(BinaryLinear(8, 4, binary_input=False), nn.Linear(4, 2))
    ops = operations(model, torch.randn(5, 8))
    assert ops["bops"] == 0 and ops["flops"] == 5 * 8 * 4 + 5 * 4 * 2


@pytest.mark.parametrize("binary", ["none", "attention", "all"])
def test_bivit_counts_by_hand(binary):
    c, n, patches = 16, 5, 4  # 28x28 with patch 14: 4 patches + cls
    model = BiViT(
        embed_dim=c, depth=1, num_heads=2, patch_size=14, attention="softmax" if binary == "none" else "binary_sab",
        binary=binary,
    )  # fmt: skip
    got = complexity(model, torch.randn(1, 1, 28, 28))["operations"]
    attention_linears = n * (3 * c * c + c * c)  # qkv + proj
    mlp = n * (c * 4 * c + 4 * c * c)  # fc1 + fc2
    matmuls = 2 * n * n * c  # q k^T and attn v over all heads
    first_last = patches * 14 * 14 * c + c * 10  # patch embedding (conv) + head
    binary_macs = {"none": 0, "attention": attention_linears + matmuls, "all": attention_linears + matmuls + mlp}
    total = attention_linears + mlp + matmuls + first_last
    assert got["bops"] == binary_macs[binary]
    assert got["flops"] == total - binary_macs[binary]
    assert got["fp_flops"] == total and got["uncounted"] == []


def test_memory_of_binary_all_model():
    model = BiViT(embed_dim=16, depth=1, num_heads=2, patch_size=14, attention="binary_sab", binary="all")
    memory = weight_bits(model)
    fp_params = sum(p.numel() for p in model.parameters()) - sum(
        m.scale.numel() for m in model.binary_layers().values()
    )
    binary_weights = sum(m.weight.numel() for m in model.binary_layers().values())
    assert memory["fp32_bits"] == 32 * fp_params
    assert memory["bits"] == 32 * fp_params - 31 * binary_weights + 32 * (3 * 16 + 16 + 4 * 16 + 16)  # + scales

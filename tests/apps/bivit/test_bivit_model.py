"""BiViT model: timm variants, shapes and gradients, swappable token mixer, binarisation switch, errors."""

from __future__ import annotations

import pytest
import timm
import torch

from apps.bivit.binary import BinaryLinear
from apps.bivit.model import BiViT, create, token_mixers
from common.attention.binary_sab import BinarySoftmaxAttention
from common.errors import ConfigError

SMALL = dict(embed_dim=32, depth=2, num_heads=2, patch_size=7)  # a fast micro for the tests


@pytest.mark.parametrize(
    "name, dim, params_m",
    [("bivit_deit_tiny", 192, 5.7), ("bivit_deit_small", 384, 22.1), ("bivit_deit_base", 768, 86.6)],
)
def test_timm_creates_deit_sizes(name, dim, params_m):
    # DeiT's parameter counts (Touvron et al., table 1) at 224x224 with 1000 classes
    with torch.device("meta"):
        model = timm.create_model(name)
    assert model.embed_dim == dim
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.1


@pytest.mark.parametrize("binary", ["none", "attention", "all"])
def test_deit_tiny_forward_backward_small_input(binary):
    attention = "softmax" if binary == "none" else "binary_sab"
    model = timm.create_model(
        "bivit_deit_tiny", img_size=32, num_classes=7, depth=2, attention=attention, binary=binary
    )
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    assert model.forward_features(x).shape == (2, 1 + 4, 192)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 192)
    out.sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0  # gradients reach the first layer through the STE


@pytest.mark.parametrize("binary", ["none", "attention", "all"])
def test_micro_shapes_grads_and_wrapper(binary):
    attention = "softmax" if binary == "none" else "binary_sab"
    model = create("micro", num_classes=10, in_chans=1, img_size=28, attention=attention, binary=binary, **SMALL)
    (x,) = model.example_inputs()
    assert x.shape == (2, 1, 28, 28)
    logits = model(x)
    assert logits.shape == (2, 10)
    logits.logsumexp(-1).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    binary_layers = {n for n, m in model.named_modules() if isinstance(m, BinaryLinear)}
    expected = {"none": 0, "attention": 2 * 2, "all": 4 * 2}[binary]  # per block: qkv, proj (+ fc1, fc2)
    assert len(binary_layers) == expected
    # patch embedding and head stay full precision
    assert not isinstance(model.net.head, BinaryLinear)
    if binary != "none":
        attn = model.net.blocks[0].attn
        assert isinstance(attn, BinarySoftmaxAttention) and attn.binarize_qkv


@pytest.mark.parametrize("attention", ["linear", "agent", "moh"])
def test_other_core_mechanisms_swap_in(attention):
    assert attention in token_mixers()
    model = BiViT(attention=attention, **SMALL)
    assert type(model.blocks[0].attn).__name__ != "SoftmaxAttention"
    out = model(torch.randn(2, 1, 28, 28))
    assert out.shape == (2, 10) and torch.isfinite(out).all()


def test_every_token_mixer_builds():
    for name in token_mixers():
        model = BiViT(attention=name, embed_dim=16, depth=1, num_heads=2, patch_size=14)
        assert model(torch.randn(1, 1, 28, 28)).shape == (1, 10), name


@pytest.mark.parametrize(
    "kwargs, key",
    [
        (dict(binary="half"), "binary"),
        (dict(binary="attention", attention="softmax"), "attention"),
        (dict(attention="routing_bilevel"), "attention"),  # a 2-D mixer: no place for the cls token
        (dict(img_size=30, patch_size=7), "img_size"),
        (dict(embed_dim=30, num_heads=4), "num_heads"),
        (dict(drop_path_rate=1.5), "drop_path_rate"),
    ],
)
def test_bad_arguments_name_their_key(kwargs, key):
    with pytest.raises(ConfigError) as info:
        BiViT(**{**SMALL, **kwargs})
    assert info.value.key == key


def test_bad_variant_and_pretrained():
    with pytest.raises(ConfigError, match="variant"):
        create("huge")
    with pytest.raises(ConfigError, match="pretrained"):
        timm.create_model("bivit_micro", pretrained=True)


def test_no_weight_decay_names_embeddings_and_scales():
    model = BiViT(attention="binary_sab", binary="all", **SMALL)
    names = model.no_weight_decay()
    assert {"pos_embed", "cls_token", "blocks.0.attn.qkv.scale", "blocks.1.mlp.fc2.scale"} <= names
    params = dict(model.named_parameters())
    assert names <= set(params)

"""FMViT through timm: every variant builds, runs forward_features/forward_head with the right shapes,
trains (gradients reach every parameter), and bad arguments raise ConfigError naming the key."""

from __future__ import annotations

import pytest
import timm
import torch

import apps.fmvit  # noqa: F401  (registers fmvit_* with timm)
from apps.fmvit.blocks import FMB, RLMHSA
from apps.fmvit.model import VARIANTS, create
from common.errors import ConfigError

# (variant, img_size): the ImageNet variants at 32x32 (maps 8, 4, 2, 1) to stay fast on CPU.
SIZES = {"cpu": 28, "t": 32, "s": 32, "b": 32, "l": 32}


def test_every_variant_is_registered():
    assert set(SIZES) == set(VARIANTS)
    assert {f"fmvit_{v}" for v in VARIANTS} <= set(timm.list_models("fmvit_*"))


@pytest.mark.parametrize("variant", list(SIZES))
def test_timm_create_shapes(variant):
    size, chans = SIZES[variant], 1 if variant == "cpu" else 3
    model = timm.create_model(f"fmvit_{variant}", num_classes=10, in_chans=chans, img_size=size).eval()
    x = torch.randn(2, chans, size, size)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        pooled = model.forward_head(feats, pre_logits=True)
    assert feats.shape[:2] == (2, model.num_features) and feats.ndim == 4
    assert logits.shape == (2, 10) and pooled.shape == (2, model.num_features)
    assert torch.isfinite(logits).all()
    assert torch.allclose(model(x), logits)


@pytest.mark.parametrize("variant", ["cpu", "t"])
def test_gradients_reach_every_parameter(variant):
    size, chans = SIZES[variant], 1 if variant == "cpu" else 3
    model = timm.create_model(f"fmvit_{variant}", num_classes=5, in_chans=chans, img_size=size, drop_path_rate=0.1)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, chans, size, size)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing[:5]
    assert any(type(m).__name__ == "DropPath" for m in model.modules())


def test_the_blocks_mix_frequencies():
    """An FMB holds one RLMHSA per rate; RLMHSA sees ceil(H/r) x ceil(W/r) tokens and returns the full grid."""
    block = FMB(32, rates=(1, 2, 4), head_dim=16)
    assert [low.rate for low in block.lows] == [1, 2, 4]
    attn = RLMHSA(32, 16, head_dim=8, rate=2).eval()
    x = torch.randn(2, 32, 7, 5)
    out = attn(x)
    assert out.shape == (2, 16, 7, 5)
    # nearest upsampling: positions in one 2x2 pooling window share their token's output
    assert torch.equal(out[..., 0, 0], out[..., 1, 1]) and torch.equal(out[..., 4, 2], out[..., 5, 3])
    assert block(torch.randn(2, 32, 7, 7)).shape == (2, 32, 7, 7)


def test_num_classes_zero_gives_pooled_features():
    model = timm.create_model("fmvit_cpu", num_classes=0, in_chans=1, img_size=28).eval()
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, model.num_features)


def test_pipeline_wrapper():
    model = create("cpu", num_classes=10, in_chans=1, img_size=28, class_names=[str(i) for i in range(10)])
    (x,) = model.example_inputs()
    assert model(x).shape == (2, 10)
    assert model.export_spec()["inputs"]["image"]["shape"] == ["N", 1, 28, 28]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"variant": "huge"}, "variant"),
        ({"variant": "cpu", "head_dim": 20}, "head_dim"),
        ({"variant": "cpu", "layouts": ("C", "CX")}, "layouts"),
        ({"variant": "cpu", "mlp_groups": (1, 5)}, "groups"),
        ({"variant": "cpu", "drop_path_rate": 1.5}, "drop_path_rate"),
        ({"variant": "cpu", "rates": tuple((0,) for _ in VARIANTS["cpu"]["rates"])}, "rates"),
        ({"variant": "cpu", "widths": (8,)}, "widths"),
    ],
)
def test_bad_arguments_name_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        create(num_classes=10, in_chans=1, img_size=28, **kwargs)
    assert err.value.key == key

"""FMViT through timm: every variant builds, runs forward_features/forward_head with the right shapes,
trains (gradients reach every parameter), and bad arguments raise ConfigError naming the key; the attention
bands are low-pass filters at their rates and the mixing block takes each frequency band from its branch."""

from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

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


def test_the_blocks_shapes():
    """An FMB holds one RLMHSA per rate; RLMHSA sees ceil(H/r) x ceil(W/r) tokens and returns the full grid."""
    block = FMB(32, rates=(1, 2, 4), head_dim=16)
    assert [low.rate for low in block.lows] == [1, 2, 4]
    attn = RLMHSA(32, 16, head_dim=8, rate=2).eval()
    out = attn(torch.randn(2, 32, 7, 5))
    assert out.shape == (2, 16, 7, 5)
    # nearest upsampling: positions in one 2x2 pooling window share their token's output
    assert torch.equal(out[..., 0, 0], out[..., 1, 1]) and torch.equal(out[..., 4, 2], out[..., 5, 3])
    assert block(torch.randn(2, 32, 7, 7)).shape == (2, 32, 7, 7)


# The frequency tests use inputs in multiples of 1/4: sums and means over 2x2 and 4x4 windows are then exact in
# float32, so a band that average pooling removes leaves the pooled map, and everything after it, bit-identical.
# "Responds" means the branch output moves by more than a tenth of its own size for a perturbation as large as the
# input (RMS 1 for the checkerboard, 1.2 for the smooth maps and the input): a pass band moves it by a share of its
# size (0.85 to 7.7 times, measured here), a stop band not at all.
RESPONDS = 0.1


def dyadic(*shape: int) -> torch.Tensor:
    return torch.randint(-8, 9, shape) / 4


def checkerboard(height: int, width: int) -> torch.Tensor:
    """(-1)^(i+j): the highest spatial frequency of the grid; it sums to zero over every aligned 2x2 window."""
    i = torch.arange(height)[:, None] + torch.arange(width)
    return (1 - 2 * (i % 2)).float()


def upsample(x: torch.Tensor, r: int) -> torch.Tensor:
    """Each value repeated over an r x r window: a map with nothing above the cut-off of pooling by r."""
    return x.repeat_interleave(r, -2).repeat_interleave(r, -1)


def window_means(x: torch.Tensor, r: int) -> torch.Tensor:
    """x with every aligned r x r window replaced by its mean: the part of x below the pooling's cut-off."""
    return upsample(F.avg_pool2d(x, r), r)


def moved(after: torch.Tensor, before: torch.Tensor) -> float:
    return float((after - before).norm() / before.norm())


@pytest.mark.parametrize("rate", [2, 4])
def test_attention_band_is_a_low_pass(rate):
    """RLMHSA at rate r sees x only through its r x r window means: the checkerboard, and every other component
    that averages to zero in each window, changes nothing; a component constant over the windows moves it."""
    attn = RLMHSA(16, 16, head_dim=8, rate=rate).eval()
    x = dyadic(2, 16, 8, 8)
    with torch.no_grad():
        out = attn(x)
        assert torch.equal(attn(window_means(x, rate)), out)
        assert torch.equal(attn(x + checkerboard(8, 8)), out)
        assert moved(attn(x + upsample(dyadic(2, 16, 8 // rate, 8 // rate), rate)), out) > RESPONDS


def test_the_mixing_block_takes_each_band_from_its_branch():
    """In an FMB with rates 1, 2, 4, the checkerboard reaches the fusion through the conv branch and the
    full-resolution attention only; a component constant over 4x4 windows reaches it through every attention band."""
    block = FMB(16, rates=(1, 2, 4), head_dim=8).eval()
    fused_inputs = []
    block.fuse.register_forward_hook(lambda module, args, out: fused_inputs.append(args[0]))
    x = dyadic(2, 16, 8, 8)
    with torch.no_grad():
        for perturbation in (0, checkerboard(8, 8), upsample(dyadic(2, 16, 2, 2), 4)):
            block(x + perturbation)
    # the fusion's input: [high (16 channels), low_1, low_2, low_4 (8 channels each)]
    base, top, smooth = (t.split([16, 8, 8, 8], dim=1) for t in fused_inputs)
    high, low_1, low_2, low_4 = zip(top, base)
    assert moved(*high) > RESPONDS and moved(*low_1) > RESPONDS
    assert torch.equal(*low_2) and torch.equal(*low_4)
    assert all(moved(after, before) > RESPONDS for after, before in zip(smooth[1:], base[1:]))


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

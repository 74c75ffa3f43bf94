"""TransDAE's model: shapes through every stage, gradients to every parameter, the blocks' invariants, the
baseline's size, and the configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.transdae.blocks import InterScaleInteraction, MixFFN, PatchExpand, to_map, to_tokens
from apps.transdae.model import TransDAE, create
from common.errors import ConfigError

SMALL = dict(num_classes=4, img_size=32, dims=(8, 16, 32), depths=(1, 1, 1), channel_heads=4)


def _params(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "variant, sides",
    [({}, (8, 4, 2)), ({"stem_stride": 2, "full_res_skip": True}, (16, 8, 4))],  # strides 4, 8, 16 | 2, 4, 8
)
def test_shapes_and_every_parameter_gets_a_gradient(variant, sides):
    torch.manual_seed(0)
    model = create("transdae", **SMALL, **variant)
    x = torch.randn(2, 1, 32, 32)
    maps = model.encode(x)
    assert [tuple(m.shape) for m in maps] == [(2, d, s, s) for d, s in zip(SMALL["dims"], sides)]
    y = model(x)
    assert y.shape == (2, 4, 32, 32) and torch.isfinite(y).all()
    (y * torch.randn_like(y)).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, missing


def test_predictions_are_per_sample():
    """No mixing across the batch: each sample's logits are those it gets alone (attention is per sample)."""
    model = create("transdae", **SMALL).eval()
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[1:2], model(x[1:2]), rtol=1e-4, atol=1e-5)


def test_paper_size_model():
    """The paper's configuration (dims 64/128/320/512, 2 blocks everywhere, 9 Synapse classes at 224 x 224) builds;
    run here at 32 x 32 (the model is size-agnostic; a 224 forward takes seconds of CPU)."""
    model = create("transdae", num_classes=9, img_size=224, dims=(64, 128, 320, 512), depths=(2, 2, 2, 2),
                   decoder_depth=2, channel_heads=8)  # fmt: skip
    with torch.no_grad():
        assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 9, 32, 32)
    assert 20e6 < _params(model) < 60e6  # DAE-Former reports 48 M with its wider decoder


def test_mixffn_skip_and_patch_expand_layouts():
    torch.manual_seed(0)
    ffn = MixFFN(8, 16)
    x = torch.randn(2, 12, 8)
    assert ffn(x, (3, 4)).shape == x.shape
    # PatchExpand unfolds each token into its own k x k patch: a token's change stays inside its patch
    expand = PatchExpand(8, 4, scale=2)
    y0 = to_map(expand(x, (3, 4))[0], (6, 8))
    x2 = x.clone()
    x2[:, 5] += 1.0  # token (row 1, column 1)
    y1 = to_map(expand(x2, (3, 4))[0], (6, 8))
    changed = (y1 - y0).abs().sum(1) > 0  # LayerNorm is per output token, so only the patch changes
    expected = torch.zeros(6, 8, dtype=torch.bool)
    expected[2:4, 2:4] = True
    assert torch.equal(changed[0], expected) and torch.equal(changed[1], expected)
    torch.testing.assert_close(to_tokens(to_map(x, (3, 4))), x)


def test_isim_reads_neighbouring_scales_only():
    """Level 1's skip depends on levels 0, 1, 2 and not on level 3; a zeroed output projection gives the plain
    skip (the module is a residual refinement)."""
    torch.manual_seed(0)
    dims = [4, 8, 8, 16]
    isim = InterScaleInteraction(dims, level=1)
    feats = [torch.randn(1, d, 16 // 2**i, 16 // 2**i, requires_grad=True) for i, d in enumerate(dims)]
    isim(feats).sum().backward()
    assert [f.grad is not None and f.grad.abs().sum() > 0 for f in feats] == [True, True, True, False]
    torch.nn.init.zeros_(isim.out.weight)
    torch.nn.init.zeros_(isim.out.bias)
    torch.testing.assert_close(isim(feats), feats[1])


def test_isim_off_is_dae_former():
    with_isim, without = create("transdae", **SMALL), create("transdae", **SMALL, isim=False)
    assert without.isim is None and _params(with_isim) > _params(without)
    assert without(torch.randn(1, 1, 32, 32)).shape == (1, 4, 32, 32)


def test_other_spatial_mixer_and_unet_baseline():
    model = create("transdae", **SMALL, spatial_attention="linear")
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    unet = create("unet", num_classes=4, img_size=64, baseline_width=24)
    default = create("transdae", num_classes=4, img_size=64, dims=(16, 32, 64, 128), channel_heads=4)
    assert unet(torch.randn(2, 1, 64, 64)).shape == (2, 4, 64, 64)
    assert 0.8 < _params(default) / _params(unet) < 1.25  # "a UNet of similar size" (the README's table)
    assert unet.export_spec()["outputs"]["logits"]["shape"] == ["N", 4, 64, 64]


def test_errors():
    with pytest.raises(ConfigError, match="img_size"):
        TransDAE(img_size=40, dims=(8, 16, 32), depths=(1, 1, 1), channel_heads=4)  # not a multiple of 16
    with pytest.raises(ConfigError, match="img_size"):
        TransDAE(img_size=36, dims=(8, 16, 32), depths=(1, 1, 1), channel_heads=4, stem_stride=2)  # nor of 8
    with pytest.raises(ConfigError, match="stem_stride"):
        TransDAE(dims=(8, 16), depths=(1, 1), channel_heads=4, stem_stride=3)
    with pytest.raises(ConfigError, match="depths"):
        TransDAE(dims=(8, 16), depths=(1,), channel_heads=4)
    with pytest.raises(ConfigError, match="arch"):
        create("swin")
    with pytest.raises(ConfigError, match="num_heads"):
        create("transdae", **(SMALL | {"channel_heads": 3}))


def test_augmented_slices_are_plain_tensors():
    """MONAI's transforms return MetaTensors; the model must get plain tensors (a MetaTensor sends every op through
    MONAI's __torch_function__ and breaks compiled graphs at each one)."""
    from apps.transdae.data import SliceDataset
    from common.medical.seg_transforms import train_transforms

    images = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    labels = (images > 0.5).astype(np.int64)
    item = SliceDataset(images, labels, train_transforms(32))[0]
    assert type(item["image"]) is torch.Tensor and type(item["label"]) is torch.Tensor
    assert item["image"].shape == item["label"].shape == (1, 32, 32)


def test_stem_norm_erases_intensity_scale_and_its_removal_keeps_it():
    """MiT's LayerNorm after the first patch embedding makes a one-channel token blind to the patch's intensity
    scale (zero conv bias at init: LN(c W x) = LN(W x)), so uniform grey (0.65) and white matter (0.83) patches
    embed alike; without it (the embedded default) they differ. Equal up to LayerNorm's eps (1e-5 added to a token
    variance of ~1e-2 here: relative changes ~1e-3 at most)."""
    torch.manual_seed(0)
    grey, white = torch.full((1, 1, 32, 32), 0.65), torch.full((1, 1, 32, 32), 0.83)
    with_norm = create("transdae", **SMALL).embeds[0]
    without = create("transdae", **SMALL, stem_norm=False).embeds[0]
    torch.testing.assert_close(with_norm(grey)[0], with_norm(white)[0], rtol=0, atol=2e-3)
    assert (without(white)[0] - without(grey)[0]).abs().amax() > 0.1
    torch.testing.assert_close(without(white)[0], without(grey)[0] * 0.83 / 0.65)  # linear in the intensity


def test_unet_baseline_norm():
    """MONAI's default instance norm rescales each slice by its own statistics: the first convolution's normalised
    features of a slice and of the same slice at 1.2x intensity are equal (up to the norm's eps); with batch norm
    (running statistics at eval) they differ."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 32, 32)
    first = {
        norm: create("unet", num_classes=4, img_size=32, baseline_width=8, baseline_norm=norm).eval().net.model[0]
        for norm in ("instance", "batch")
    }
    with torch.no_grad():
        unit = first["instance"].conv.unit0
        torch.testing.assert_close(unit(x), unit(1.2 * x), rtol=1e-3, atol=1e-3)
        unit = first["batch"].conv.unit0
        assert (unit(x) - unit(1.2 * x)).abs().amax() > 1e-2
    with pytest.raises(ConfigError, match="baseline_norm"):
        create("unet", num_classes=4, img_size=32, baseline_norm="group")

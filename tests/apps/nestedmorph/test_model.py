"""NestedMorph's network: shapes, the identity at a zero displacement, a flow head that starts near zero,
gradients into the first encoder layer, translation read from the images, and the VoxelMorph baseline."""

from __future__ import annotations

import pytest
import torch

from apps.nestedmorph.blocks import MultiScaleGatedAttention, PatchExpand
from apps.nestedmorph.model import RegistrationNet
from apps.nestedmorph.module import NestedMorphModule
from common.errors import ConfigError

TINY = dict(size=32, dims=(8, 16, 32, 64), decoder_depth=1)


def test_shapes_flow_head_near_zero_and_gradients():
    """One forward and backward (oneDNN builds its 3-D conv kernels on the first call: seconds on 2 cores)."""
    model = RegistrationNet(**TINY)
    moving, fixed = torch.rand(2, 1, 32, 32, 32), torch.rand(2, 1, 32, 32, 32)
    warped, ddf = model(moving, fixed)
    assert warped.shape == (2, 1, 32, 32, 32) and ddf.shape == (2, 3, 32, 32, 32)
    # weights ~ N(0, 1e-5) over 3 x 27 inputs of order 1: |ddf| ~ 1e-4 voxels; 1e-2 leaves two orders of margin
    assert ddf.abs().max() < 1e-2
    torch.testing.assert_close(warped, moving, atol=1e-2, rtol=0)  # a near-zero flow barely moves the image
    ((warped - fixed) ** 2).mean().add(ddf.pow(2).mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    assert model.net.encoder.embeds[0].proj.weight.grad.abs().sum() > 0


def test_zero_displacement_warps_to_the_identity():
    model = RegistrationNet(**TINY)
    moving = torch.rand(1, 1, 32, 32, 32)
    torch.testing.assert_close(model.warp(moving, torch.zeros(1, 3, 32, 32, 32)), moving, atol=1e-6, rtol=0)


def test_integer_displacement_shifts_the_volume():
    """MONAI's Warp samples moving at x + ddf(x): ddf = +2 along axis 0 reads the voxel two slices further."""
    model = RegistrationNet(**TINY)
    moving = torch.rand(1, 1, 32, 32, 32)
    ddf = torch.zeros(1, 3, 32, 32, 32)
    ddf[:, 0] = 2.0
    torch.testing.assert_close(model.warp(moving, ddf)[..., :-2, :, :], moving[..., 2:, :, :], atol=1e-5, rtol=0)


def test_patch_expand_is_a_pixel_shuffle():
    """Each token's expanded vector fills the 2x2x2 block at its own place (no mixing between tokens)."""
    expand = PatchExpand(8, scale=2, div=2)
    x = torch.zeros(1, 8, 8)  # 2x2x2 tokens
    x[0, 5] = torch.randn(8)  # token (1, 0, 1)
    out, dhw = expand(x, (2, 2, 2))
    assert dhw == (4, 4, 4)
    changed = (out.reshape(4, 4, 4, 4) - out[0, 0]).abs().sum(-1) > 1e-6
    assert changed.nonzero().tolist() == [[a, b, c] for a in (2, 3) for b in (0, 1) for c in (2, 3)]


def test_gated_attention_keeps_shape_and_reads_both_inputs():
    fusion = MultiScaleGatedAttention(8).eval()
    x, g = torch.randn(2, 8, 4, 4, 4), torch.randn(2, 8, 4, 4, 4)
    y = fusion(x, g)
    assert y.shape == x.shape
    assert not torch.allclose(y, fusion(x, g + 1.0)) and not torch.allclose(y, fusion(x + 1.0, g))


def test_voxelmorph_baseline_has_the_same_interface():
    model = RegistrationNet(arch="voxelmorph", size=32).eval()
    with torch.no_grad():
        warped, ddf = model(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32))
    assert warped.shape == (1, 1, 32, 32, 32) and ddf.shape == (1, 3, 32, 32, 32)


@pytest.mark.parametrize(
    "kwargs, key",
    [({"arch": "transmorph"}, "arch"), ({"size": 48}, "size"), ({"dims": (8, 16, 32)}, "dims"), ({"size": 16}, "size")],
)
def test_bad_arguments_raise_config_errors(kwargs, key):
    with pytest.raises(ConfigError) as err:
        RegistrationNet(**{**TINY, **kwargs})
    assert err.value.key == key


def test_bf16_autocast_keeps_the_warp_and_the_loss_in_fp32():
    """Under bf16 autocast the network runs in bf16, the warp and LNCC do not: MONAI's LNCC of two smooth
    volumes in bf16 came out near -7.6e6 instead of -0.96 (its window variances cancel), which is what made
    bf16-mixed training diverge. Here the two losses differ only through the bf16 network's displacement
    (about 1e-4 voxels at initialisation), far below 1e-3 of NCC."""
    model = RegistrationNet(**TINY)
    module = NestedMorphModule(model, optimizer=None)
    g = torch.Generator().manual_seed(0)
    moving = torch.nn.functional.avg_pool3d(torch.rand(1, 1, 32, 32, 32, generator=g), 5, 1, 2)
    batch = {"moving": moving, "fixed": moving.roll(1, 2)}
    with torch.no_grad():
        reference, _ = module.loss(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, out = module.loss(batch)
    assert out["warped"].dtype == out["ddf"].dtype == torch.float32
    assert abs(float(loss) - float(reference)) < 1e-3 and -1 < float(reference) < 0


def test_integrated_output_of_a_constant_velocity_is_that_translation():
    """integrate=7 reads the output as a stationary velocity: a constant one integrates to the same constant
    displacement (away from the border, where the zero padding of the squaring steps reaches in)."""
    model = RegistrationNet(**TINY, integrate=7)
    with torch.no_grad():
        model.net.flow.weight.zero_()
        model.net.flow.bias.copy_(torch.tensor([1.5, -0.5, 0.25]))
        _, ddf = model(torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32))
    inner = ddf[0, :, 4:-4, 4:-4, 4:-4].flatten(1)
    torch.testing.assert_close(inner, torch.tensor([[1.5], [-0.5], [0.25]]).expand_as(inner), atol=1e-4, rtol=0)

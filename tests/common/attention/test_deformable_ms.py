"""Multi-scale deformable attention: reference vs a brute-force bilinear sampler, gradcheck, module contract."""

from __future__ import annotations

import math

import pytest
import torch

from common.attention import build, capabilities
from common.attention.deformable_ms import MultiScaleDeformableAttention, deformable_ms, deformable_ms_torch
from common.errors import ConfigError
from tests.common.attention.helpers_b import assert_finite_grads

SHAPES = torch.tensor([[3, 5], [2, 3]])  # two levels, odd sizes
STARTS = torch.tensor([0, 15])


def brute_force(value, spatial_shapes, sampling_locations, attention_weights):
    """Explicit loops: bilinear sampling, align_corners=False, zero outside the map, weighted sum."""
    batch, _, heads, head_dim = value.shape
    _, queries, _, levels, points, _ = sampling_locations.shape
    out = torch.zeros(batch, queries, heads, head_dim, dtype=value.dtype)
    start = 0
    for level in range(levels):
        height, width = (int(s) for s in spatial_shapes[level])
        for b in range(batch):
            for q in range(queries):
                for h in range(heads):
                    for p in range(points):
                        x = float(sampling_locations[b, q, h, level, p, 0]) * width - 0.5
                        y = float(sampling_locations[b, q, h, level, p, 1]) * height - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(head_dim, dtype=value.dtype)
                        for xi, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                            for yi, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                                if 0 <= xi < width and 0 <= yi < height:
                                    sample += wx * wy * value[b, start + yi * width + xi, h]
                        out[b, q, h] += attention_weights[b, q, h, level, p] * sample
        start += height * width
    return out.flatten(2)


def random_inputs(batch=2, queries=4, heads=2, head_dim=3, points=2, dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    value = torch.randn(batch, 21, heads, head_dim, generator=g, dtype=dtype)
    # many points fall outside [0, 1] (partly or fully off the map)
    locations = torch.rand(batch, queries, heads, 2, points, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    weights = torch.rand(batch, queries, heads, 2, points, generator=g, dtype=dtype)
    return value, locations, weights


def test_reference_matches_brute_force_incl_points_outside():
    value, locations, weights = random_inputs()
    locations[0, 0, 0, 0, 0] = torch.tensor([-0.5, 0.5])  # far outside: zero
    locations[0, 0, 0, 1, 1] = torch.tensor([0.5 / 3, 0.5 / 2])  # exact centre of pixel (0, 0) on level 1
    outside = ((locations < 0) | (locations > 1)).any(-1)
    assert outside.any() and (~outside).any()
    ours = deformable_ms_torch(value, SHAPES, STARTS, locations, weights)
    torch.testing.assert_close(ours, brute_force(value, SHAPES, locations, weights), rtol=1e-12, atol=1e-12)


def test_pixel_centre_reads_the_pixel_and_far_points_read_zero():
    value, _, _ = random_inputs(batch=1, queries=1, heads=1, points=1)
    weights = torch.ones(1, 1, 1, 2, 1, dtype=torch.float64)
    weights[..., 1, :] = 0.0  # only level 0
    centre = torch.tensor([(2 + 0.5) / 5, (1 + 0.5) / 3], dtype=torch.float64)  # pixel (y=1, x=2)
    loc = centre.expand(1, 1, 1, 2, 1, 2).clone()
    out = deformable_ms_torch(value, SHAPES, STARTS, loc, weights)
    torch.testing.assert_close(out[0, 0], value[0, 1 * 5 + 2, 0])
    loc[..., 0, :, :] = torch.tensor([1.5, 1.5], dtype=torch.float64)
    assert deformable_ms_torch(value, SHAPES, STARTS, loc, weights).abs().max() == 0


def test_gradcheck_reference_float64():
    value, locations, weights = random_inputs(batch=1, queries=2, heads=2, head_dim=2)
    inputs = [t.clone().requires_grad_(True) for t in (value, locations, weights)]
    assert torch.autograd.gradcheck(
        lambda v, loc, w: deformable_ms_torch(v, SHAPES, STARTS, loc, w), inputs, eps=1e-6, atol=1e-7
    )


def test_dispatch_impls_agree_and_unknown_impl_is_a_config_error():
    value, locations, weights = random_inputs()
    ref = deformable_ms_torch(value, SHAPES, STARTS, locations, weights)
    for impl in ("auto", "torch"):
        torch.testing.assert_close(deformable_ms(value, SHAPES, STARTS, locations, weights, impl=impl), ref)
    with pytest.raises(ConfigError):
        deformable_ms(value, SHAPES, STARTS, locations, weights, impl="cuda")


def make_module(**kwargs):
    torch.manual_seed(0)
    module = MultiScaleDeformableAttention(8, 2, num_levels=2, num_points=2, **kwargs).double()
    # move off the init so that offsets depend on the query
    with torch.no_grad():
        module.sampling_offsets.weight.normal_(0, 0.3)
        module.attention_weights.weight.normal_(0, 0.3)
    return module


@pytest.mark.parametrize("ref_dim", [2, 4])
def test_module_shapes_and_finite_grads(ref_dim):
    module = make_module()
    query = torch.randn(2, 5, 8, dtype=torch.float64, requires_grad=True)
    value = torch.randn(2, 21, 8, dtype=torch.float64, requires_grad=True)
    ref = torch.rand(2, 5, 2, ref_dim, dtype=torch.float64)
    out = module(query, ref, value, SHAPES, STARTS)
    assert out.shape == (2, 5, 8)
    assert_finite_grads(module, out, query, value)


def test_module_value_mask_honoured():
    module = make_module()
    query, value = torch.randn(2, 6, 8, dtype=torch.float64), torch.randn(2, 21, 8, dtype=torch.float64)
    ref = torch.rand(2, 6, 2, 2, dtype=torch.float64)
    mask = torch.ones(2, 21, dtype=torch.bool)
    mask[0, 3:9], mask[1, 15:] = False, False  # part of level 0; all of level 1
    value2 = value.clone()
    value2[~mask] = 10 * torch.randn_like(value2[~mask])
    with torch.no_grad():
        out1 = module(query, ref, value, SHAPES, STARTS, value_mask=mask)
        out2 = module(query, ref, value2, SHAPES, STARTS, value_mask=mask)
        unmasked = module(query, ref, value2, SHAPES, STARTS)
    torch.testing.assert_close(out1, out2)
    assert not torch.allclose(out1, unmasked)  # the masked tokens are sampled, so the mask matters


def test_init_follows_deformable_detr():
    module = MultiScaleDeformableAttention(16, 4, num_levels=3, num_points=2)
    bias = module.sampling_offsets.bias.view(4, 3, 2, 2)
    expected_dirs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    for p in range(2):
        for level in range(3):
            torch.testing.assert_close(bias[:, level, p], expected_dirs * (p + 1), atol=1e-6, rtol=0)
    assert module.sampling_offsets.weight.abs().max() == 0
    assert module.attention_weights.weight.abs().max() == 0 and module.attention_weights.bias.abs().max() == 0


def test_zero_size_box_samples_its_centre():
    """4-d reference points scale the offsets by the box size: a zero box puts every point on its centre."""
    module = make_module()
    query, value = torch.randn(1, 3, 8, dtype=torch.float64), torch.randn(1, 21, 8, dtype=torch.float64)
    centre = torch.rand(1, 3, 2, 2, dtype=torch.float64)
    boxes = torch.cat([centre, torch.zeros_like(centre)], -1)
    with torch.no_grad():
        out = module(query, boxes, value, SHAPES, STARTS)
        v = module.value_proj(value).view(1, 21, 2, 4)
        loc = centre[:, :, None, :, None, :].expand(1, 3, 2, 2, 2, 2)
        weights = module.attention_weights(query).view(1, 3, 2, 4).softmax(-1).view(1, 3, 2, 2, 2)
        expected = module.output_proj(deformable_ms_torch(v, SHAPES, STARTS, loc, weights))
    torch.testing.assert_close(out, expected)


def test_registry_and_bad_config():
    caps = capabilities("deformable_ms")
    assert caps.layout == "multiscale" and not caps.token_mixer and caps.mask
    assert isinstance(build("deformable_ms", 8, 2, num_levels=2), MultiScaleDeformableAttention)
    with pytest.raises(ConfigError):
        MultiScaleDeformableAttention(10, 4)
    with pytest.raises(ConfigError):
        MultiScaleDeformableAttention(8, 2, impl="cuda")  # "triton" is an impl since the kernel (issue 4)

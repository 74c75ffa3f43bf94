"""Hedgehog: linear form = explicit weights, distillation brings the weights close to softmax's, masks, causality."""

from __future__ import annotations

import pytest
import torch

from common.attention import build, capabilities
from common.attention.hedgehog import HedgehogAttention, HedgehogFeatureMap
from tests.common.attention.helpers_b import (
    assert_finite_grads,
    assert_finite_when_rows_see_nothing,
    assert_mask_honoured,
    assert_never_looks_ahead,
    padding_mask,
)

DIM, HEADS, N = 16, 2, 10


def make(**kwargs):
    torch.manual_seed(0)
    return HedgehogAttention(DIM, HEADS, **kwargs).double()


def test_feature_map_is_positive_softmax_pair_and_identity_initialised():
    fmap = HedgehogFeatureMap(HEADS, 4).double()
    x = torch.randn(2, HEADS, 5, 4, dtype=torch.float64)
    phi = fmap(x)
    assert phi.shape == (2, HEADS, 5, 8) and (phi > 0).all()
    torch.testing.assert_close(phi[..., :4], x.softmax(-1))
    torch.testing.assert_close(phi[..., 4:], (-x).softmax(-1))


@pytest.mark.parametrize("causal", [False, True])
def test_linear_form_equals_explicit_weights(causal):
    module = make(causal=causal)
    x = torch.randn(2, N, DIM, dtype=torch.float64)
    mask = padding_mask(2, N, [N, 7])
    with torch.no_grad():
        weights = module.attention_weights(x, mask)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, N, dtype=torch.float64))
        if causal:
            assert torch.triu(weights, diagonal=1).abs().max() == 0
        assert weights[1, :, :, 7:].abs().max() == 0
        v = module.qkv(x)[..., 2 * DIM :].view(2, N, HEADS, -1).transpose(1, 2)
        expected = module.proj((weights @ v).transpose(1, 2).reshape(2, N, DIM))
        torch.testing.assert_close(module(x, mask=mask), expected)


@pytest.mark.parametrize("causal", [False, True])
def test_shapes_grads_mask(causal):
    module = make(causal=causal)
    x = torch.randn(2, N, DIM, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == (2, N, DIM)
    assert_finite_grads(module, out, x)
    mask = padding_mask(2, N, [N, 6])
    assert_mask_honoured(module, x.detach(), mask.flip(-1) if causal else mask)


def test_causal_queries_without_keys_stay_finite():
    assert_finite_when_rows_see_nothing(make(causal=True), torch.randn(2, N, DIM, dtype=torch.float64))


def test_causal_never_looks_ahead():
    assert_never_looks_ahead(make(causal=True), torch.randn(2, N, DIM, dtype=torch.float64), t=3)


def test_distillation_brings_weights_close_to_softmax():
    """300 Adam steps on fresh random batches, training only the feature maps (q/k projections, hence the
    softmax teacher, stay fixed). Measured here: mean total-variation distance between the Hedgehog and
    softmax rows on held-out inputs 0.465 -> 0.207, soft cross-entropy 2.756 -> 2.203 (teacher entropy, the
    floor, 2.06)."""
    torch.manual_seed(0)
    module = HedgehogAttention(DIM, HEADS, feature_dim=16)  # F = 2 x head dim
    module.requires_grad_(False)
    params = module.feature_map_parameters()
    for p in params:
        p.requires_grad_(True)
    g = torch.Generator().manual_seed(1)
    held_out = 2.0 * torch.randn(8, 16, DIM, generator=g)

    def distance():
        with torch.no_grad():
            tv = 0.5 * (module.attention_weights(held_out) - module.softmax_weights(held_out)).abs().sum(-1).mean()
            return tv.item(), module.distillation_loss(held_out).item()

    tv_before, ce_before = distance()
    optimizer = torch.optim.Adam(params, lr=3e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add overhead
    try:
        for _ in range(300):
            optimizer.zero_grad()
            module.distillation_loss(2.0 * torch.randn(4, 16, DIM, generator=g)).backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    tv_after, ce_after = distance()
    print(f"hedgehog distillation: TV {tv_before:.3f} -> {tv_after:.3f}, CE {ce_before:.3f} -> {ce_after:.3f}")
    assert tv_after < 0.6 * tv_before
    assert ce_after < ce_before - 0.1


def test_distillation_loss_masks_rows_and_keys():
    module = make()
    x, mask = torch.randn(2, N, DIM, dtype=torch.float64), padding_mask(2, N, [N, 5])
    x2 = x.clone()
    x2[~mask] = torch.randn_like(x2[~mask])
    torch.testing.assert_close(module.distillation_loss(x, mask), module.distillation_loss(x2, mask))


def test_registry_and_tied_maps():
    caps = capabilities("hedgehog")
    assert caps.causal and caps.mask and caps.cost == "N" and caps.token_mixer
    assert build("hedgehog", DIM, HEADS, causal=True).causal
    tied = HedgehogAttention(DIM, HEADS, tie_qk=True)
    assert tied.feature_q is tied.feature_k and len(tied.feature_map_parameters()) == 2

"""Flow-Attention: flow conservation, linear form = explicit flow matrix, masks, causality."""

from __future__ import annotations

import pytest
import torch

from common.attention import build, capabilities
from common.attention.flow import FlowAttention, flow_attention, flow_quantities
from tests.common.attention.helpers_b import (
    assert_finite_grads,
    assert_finite_when_rows_see_nothing,
    assert_mask_honoured,
    assert_never_looks_ahead,
    padding_mask,
)

B, H, N, D = 2, 2, 9, 4


def qkv():
    g = torch.Generator().manual_seed(0)
    return [torch.randn(B, H, N, D, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True])
def test_flow_conservation(causal):
    """Normalised by the incoming flow, every sink receives exactly 1; normalised by the outgoing flow, every
    source sends exactly 1. Causal (as the official code): sink i counts sources j <= i, and source j, whose
    later sinks are unknown at step j, counts sinks i <= j."""
    q, k, _ = qkv()
    mask = padding_mask(B, N, [N, 6])
    f = flow_quantities(q, k, causal=causal, mask=mask, eps=1e-12)
    capacity = f["phi_q"] @ f["phi_k"].transpose(-2, -1)  # [B, H, N, N], flow sink i <- source j
    sink_side, source_side = (capacity.tril(), capacity.triu()) if causal else (capacity, capacity)
    real = mask[:, None, :].expand(B, H, N)
    into_sink = (sink_side / f["incoming"][..., None]).sum(-1)
    out_of_source = (source_side / f["outgoing"][..., None, :]).sum(-2)
    torch.testing.assert_close(into_sink[real], torch.ones_like(into_sink[real]))
    torch.testing.assert_close(out_of_source[real], torch.ones_like(out_of_source[real]))
    # padded tokens carry no flow at all
    assert capacity[1][:, 6:].abs().max() == 0 and capacity[1][:, :, 6:].abs().max() == 0
    assert ((f["allocation"] > 0) & (f["allocation"] < 1)).all()
    if not causal:  # competition: a softmax over the real sources, scaled to mean 1
        torch.testing.assert_close(f["competition"].sum(-1), real.sum(-1).to(torch.float64))
        assert f["competition"][1][:, 6:].abs().max() == 0


@pytest.mark.parametrize("causal", [False, True])
def test_linear_form_equals_explicit_flow_matrix(causal):
    q, k, v = qkv()
    f = flow_quantities(q, k, causal=causal)
    capacity = f["phi_q"] @ f["phi_k"].transpose(-2, -1)
    if causal:
        capacity = capacity.tril()
    explicit = f["allocation"][..., None] * ((capacity / f["incoming"][..., None]) @ (v * f["competition"][..., None]))
    torch.testing.assert_close(flow_attention(q, k, v, causal=causal), explicit)


def test_causal_competition_is_a_running_softmax():
    q, k, _ = qkv()
    f = flow_quantities(q, k, causal=True)
    source = f["conserved_source"]
    for j in (0, 3, N - 1):
        expected = source[..., j].exp() / source[..., : j + 1].exp().sum(-1) * (j + 1)
        torch.testing.assert_close(f["competition"][..., j], expected)


def make(causal=False):
    torch.manual_seed(0)
    return FlowAttention(8, 2, causal=causal).double()


@pytest.mark.parametrize("causal", [False, True])
def test_shapes_grads_and_mask(causal):
    module = make(causal)
    x = torch.randn(2, N, 8, dtype=torch.float64, requires_grad=True)
    out = module(x)
    assert out.shape == (2, N, 8)
    assert_finite_grads(module, out, x)
    mask = padding_mask(2, N, [N, 5])
    if causal:  # left padding, so that real tokens come after padded ones
        mask = mask.flip(-1)
    assert_mask_honoured(module, x.detach(), mask)


def test_causal_queries_without_keys_stay_finite():
    assert_finite_when_rows_see_nothing(make(causal=True), torch.randn(2, N, 8, dtype=torch.float64))


def test_causal_never_looks_ahead():
    assert_never_looks_ahead(make(causal=True), torch.randn(2, N, 8, dtype=torch.float64), t=4)


def test_registry():
    caps = capabilities("flow")
    assert caps.causal and caps.mask and caps.cost == "N" and caps.token_mixer
    assert build("flow", 8, 2, causal=True).causal

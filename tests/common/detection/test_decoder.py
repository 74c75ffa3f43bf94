"""Deformable decoder: self-attention mask and bias, the bias hook, look-forward-twice refinement."""

from __future__ import annotations

import torch

from common.detection.decoder import DeformableDecoder, DeformableDecoderLayer, attention_bias, inverse_sigmoid
from tests.common.detection.test_encoder import make_tokens

DIM, HEADS = 16, 2


def small_decoder(num_layers=2):
    torch.manual_seed(0)
    dec = DeformableDecoder(3, num_layers=num_layers, dim=DIM, num_heads=HEADS, num_levels=2, num_points=2, ffn_dim=32)
    for head in dec.box_heads:  # non-zero refinement so the boxes move
        torch.nn.init.normal_(head.layers[-1].weight, std=0.1)
    return dec


def test_attention_bias_merges_mask_and_bias():
    mask = torch.tensor([[False, True], [False, False]])
    bias = torch.ones(1, 2, 2, 2)
    merged = attention_bias(mask, bias)
    assert torch.isneginf(merged[..., 0, 1]).all() and (merged[..., 1, :] == 1).all()
    assert attention_bias(None, bias) is bias


def test_blocked_query_is_not_seen():
    """Query 0 may not see query 1: changing query 1 leaves query 0's output unchanged (layer is per-query else)."""
    torch.manual_seed(0)
    layer = DeformableDecoderLayer(DIM, HEADS, num_levels=2, num_points=2, ffn_dim=32).eval()
    tokens = make_tokens(dim=DIM)
    query, pos, ref = torch.randn(2, 3, DIM), torch.randn(2, 3, DIM), torch.rand(2, 3, 2, 4) * 0.5 + 0.25
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = True
    out = layer(query, pos, ref, tokens.src, tokens, self_attn_mask=mask)
    changed = query.clone()
    changed[:, 1] += 5.0
    again = layer(changed, pos, ref, tokens.src, tokens, self_attn_mask=mask)
    torch.testing.assert_close(again[:, 0], out[:, 0])
    assert not torch.allclose(again[:, 2], out[:, 2])
    # the same block written as a -inf bias gives the same result
    bias = torch.zeros(1, 1, 3, 3).masked_fill(mask, float("-inf"))
    torch.testing.assert_close(layer(query, pos, ref, tokens.src, tokens, self_attn_bias=bias), out)


def test_bias_fn_called_per_layer_with_boxes():
    dec = small_decoder(num_layers=3)
    tokens = make_tokens(dim=DIM)
    calls = []

    def bias_fn(i, previous, current):
        calls.append((i, None if previous is None else previous.clone(), current.clone()))
        return torch.zeros(1, HEADS, 4, 4)

    ref = inverse_sigmoid(torch.rand(2, 4, 4) * 0.5 + 0.25)
    logits, boxes = dec(torch.randn(2, 4, DIM), ref, tokens.src, tokens, bias_fn=bias_fn)
    assert [c[0] for c in calls] == [0, 1, 2] and calls[0][1] is None
    torch.testing.assert_close(calls[0][2], ref.sigmoid())
    torch.testing.assert_close(calls[1][1], ref.sigmoid())  # layer 1 sees (input of layer 0, output of layer 0)
    torch.testing.assert_close(calls[1][2], boxes[0].detach())
    torch.testing.assert_close(calls[2][1], boxes[0].detach())
    assert len(logits) == 3 and logits[0].shape == (2, 4, 3) and boxes[-1].shape == (2, 4, 4)


def test_look_forward_twice_gradients():
    """Layer 1's box loss trains layer 0's box head (boxes chain undetached); layer 1's class loss does not
    (its reference input is detached)."""
    dec = small_decoder()
    tokens = make_tokens(dim=DIM)
    ref = inverse_sigmoid(torch.rand(2, 4, 4) * 0.5 + 0.25)
    logits, boxes = dec(torch.randn(2, 4, DIM), ref, tokens.src, tokens)
    boxes[1].sum().backward(retain_graph=True)
    assert dec.box_heads[0].layers[-1].weight.grad.abs().sum() > 0
    dec.zero_grad()
    logits[1].sum().backward()
    grad = dec.box_heads[0].layers[-1].weight.grad
    assert grad is None or grad.abs().sum() == 0

"""Position relation encoder: shapes, per-head output, identical boxes, translation and scale invariance."""

from __future__ import annotations

import math

import torch

from apps.relation_detr.relation import PositionRelationEncoder, box_relation_features


def _boxes(batch=2, n=5):
    return torch.cat([torch.rand(batch, n, 2) * 0.5 + 0.25, torch.rand(batch, n, 2) * 0.2 + 0.05], -1)


def test_features_by_hand():
    a = torch.tensor([[[0.2, 0.3, 0.1, 0.2]]])
    b = torch.tensor([[[0.5, 0.3, 0.2, 0.1]]])
    rel = box_relation_features(a, b)[0, 0]
    expected = [math.log(0.3 / 0.1 + 1), 0.0, math.log(0.1 / 0.2), math.log(0.2 / 0.1)]
    assert torch.allclose(rel, torch.tensor(expected), atol=1e-3)


def test_features_are_translation_and_scale_invariant():
    src, tgt = _boxes(), _boxes()
    shift = torch.tensor([0.07, -0.04, 0.0, 0.0])
    scale = torch.tensor([0.5, 0.5, 0.5, 0.5])
    base = box_relation_features(src, tgt)
    assert torch.allclose(box_relation_features(src + shift, tgt + shift), base, atol=1e-4)
    assert torch.allclose(box_relation_features(src * scale, tgt * scale), base, atol=1e-3)
    # ...but not invariant to moving one set alone
    assert not torch.allclose(box_relation_features(src + shift, tgt), base, atol=1e-3)


def test_encoder_gives_one_bias_map_per_head():
    enc = PositionRelationEncoder(num_heads=4)
    bias = enc(_boxes(2, 5), _boxes(2, 7))
    assert bias.shape == (2, 4, 5, 7)
    assert (bias >= 0).all()  # ReLU: the prior can only raise attention logits
    # heads differ (separate conv filters)
    assert not torch.allclose(bias[:, 0], bias[:, 1])


def test_identical_boxes_get_the_same_bias_everywhere():
    torch.manual_seed(0)
    enc = PositionRelationEncoder(num_heads=4)
    boxes = _boxes(2, 6)
    diag = enc(boxes).diagonal(dim1=-2, dim2=-1)  # [B, H, N]: every box with itself: all features 0
    assert torch.allclose(diag, diag[..., :1].expand_as(diag), atol=1e-6)
    # ...and that value is the projection of the embedding of zeros: sin 0 = 0, cos 0 = 1
    zeros = torch.zeros(1, 1, 1, 4)
    expected = enc.proj(enc.embed(zeros[..., 0, :], zeros[..., 0, :]).permute(0, 3, 1, 2))[0, :, 0, 0]
    assert torch.allclose(diag[0, :, 0], expected, atol=1e-6)


def test_bias_is_translation_invariant():
    enc = PositionRelationEncoder(num_heads=2)
    boxes = _boxes(1, 4)
    shift = torch.tensor([0.1, 0.05, 0.0, 0.0])
    assert torch.allclose(enc(boxes), enc(boxes + shift), atol=1e-4)


def test_only_the_projection_learns():
    enc = PositionRelationEncoder(num_heads=2)
    boxes = _boxes(1, 4).requires_grad_()
    enc(boxes).sum().backward()
    assert boxes.grad is None  # the geometry is a fixed prior
    assert enc.proj[0].weight.grad.abs().sum() > 0

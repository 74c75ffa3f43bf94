"""Loss terms against hand-computed values."""

from __future__ import annotations

import math

import torch

from common.detection.losses import focal_loss, giou_box_loss, l1_box_loss, varifocal_loss


def _bce(x, y):
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_focal_loss_matches_the_formula():
    logits = torch.tensor([[[0.0, 2.0]]])
    onehot = torch.tensor([[[1.0, 0.0]]])
    p0, p1 = 0.5, 1 / (1 + math.exp(-2.0))
    expected = 0.25 * (1 - p0) ** 2 * _bce(0.0, 1) + 0.75 * p1**2 * _bce(2.0, 0)
    assert math.isclose(focal_loss(logits, onehot, num_boxes=2.0).item(), expected / 2, rel_tol=1e-5)


def test_varifocal_loss_matches_the_formula():
    logits = torch.tensor([[[1.0, -1.0]]])
    onehot = torch.tensor([[[1.0, 0.0]]])
    iou = torch.tensor([[0.6]])
    p1 = 1 / (1 + math.exp(1.0))
    # positive: target 0.6, weight 0.6; negative: target 0, weight 0.75 * p^2
    expected = 0.6 * _bce(1.0, 0.6) + 0.75 * p1**2 * _bce(-1.0, 0)
    assert math.isclose(varifocal_loss(logits, onehot, iou, num_boxes=1.0).item(), expected, rel_tol=1e-5)


def test_varifocal_positive_is_minimal_at_the_iou():
    # the loss on a positive is smallest when sigmoid(logit) equals the IoU target (BCE's minimum)
    onehot = torch.ones(1, 1, 1)
    iou = torch.tensor([[0.3]])
    at_target = varifocal_loss(torch.logit(torch.tensor([[[0.3]]])), onehot, iou, 1.0)
    for p in (0.1, 0.6, 0.9):
        assert varifocal_loss(torch.logit(torch.tensor([[[p]]])), onehot, iou, 1.0) > at_target


def test_box_losses_by_hand():
    a = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    b = torch.tensor([[0.6, 0.5, 0.2, 0.2]])
    assert math.isclose(l1_box_loss(a, b, 1.0).item(), 0.1, rel_tol=1e-5)
    # overlap 0.1 x 0.2 = 0.02, union 0.06, hull 0.3 x 0.2 = 0.06 -> GIoU = 1/3
    assert math.isclose(giou_box_loss(a, b, 2.0).item(), (1 - 1 / 3) / 2, rel_tol=1e-4)
    assert giou_box_loss(a, a, 1.0).item() < 1e-5  # torchvision adds eps=1e-7 to the union
    empty = torch.zeros(0, 4, requires_grad=True)
    assert giou_box_loss(empty, empty, 1.0).item() == 0.0

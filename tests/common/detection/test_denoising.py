"""Contrastive denoising: layout, noise magnitudes, and the attention mask that keeps groups apart."""

from __future__ import annotations

import torch
from torchvision.ops import box_convert

from common.detection.denoising import ContrastiveDenoising, denoising_attention_mask

D, Q = 16, 5


def _targets():
    return [
        {
            "labels": torch.tensor([0, 1, 2]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.2, 0.4], [0.5, 0.2, 0.1, 0.1]]),
        },
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


def test_shapes_and_meta():
    dn = ContrastiveDenoising(num_classes=3, hidden_dim=D, num_dn_queries=20).train()
    content, boxes, mask, meta = dn(_targets(), Q)
    # M = 3 targets -> groups of 6, 20 // 6 = 3 groups, 18 queries
    assert meta == {"pad_size": 18, "num_groups": 3, "group_size": 6, "max_targets": 3}
    assert content.shape == (2, 18, D) and boxes.shape == (2, 18, 4) and mask.shape == (18 + Q, 18 + Q)
    # image 1 has one target: slots 1, 2 (positives) and 4, 5 (negatives) of each group are padding
    assert content[1, [1, 2, 4, 5]].abs().sum() == 0 and content[1, [0, 3]].abs().sum() > 0


def test_attention_mask_blocks_groups_and_matching_queries():
    mask = denoising_attention_mask(num_groups=3, group_size=4, num_queries=Q)
    pad = 12
    assert mask[pad:, :pad].all()  # matching queries never see denoising queries
    assert not mask[pad:, pad:].any()  # ...but see each other
    assert not mask[:pad, pad:].any()  # denoising queries may look at the matching ones
    for g in range(3):
        rows = slice(4 * g, 4 * g + 4)
        own = torch.zeros(pad, dtype=torch.bool)
        own[4 * g : 4 * g + 4] = True
        assert not mask[rows, :pad][:, own].any() and mask[rows, :pad][:, ~own].all()


def test_positive_noise_is_smaller_than_negative_noise():
    torch.manual_seed(1)
    dn = ContrastiveDenoising(num_classes=3, hidden_dim=D, num_dn_queries=200).train()
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]])}]
    _, boxes, _, meta = dn(target, Q)
    xyxy = box_convert(boxes[0].sigmoid(), "cxcywh", "xyxy")
    shift = (xyxy - torch.tensor([0.4, 0.4, 0.6, 0.6])).abs().max(-1).values  # in units of the box
    pos, neg = shift[0::2], shift[1::2]  # group size 2: positive at 0, negative at 1
    half = 0.1  # half the box side; the negatives' corners move by [1, 2) half-sides (before clamping)
    assert (pos < half + 1e-3).all() and (neg >= half - 1e-3).all()


def test_label_noise_flips_about_a_quarter():
    torch.manual_seed(0)
    dn = ContrastiveDenoising(num_classes=50, hidden_dim=D, label_noise_ratio=0.5).train()
    labels = torch.zeros(20000, dtype=torch.long)
    flipped = (dn.noised_labels(labels) != 0).float().mean().item()
    assert abs(flipped - 0.25 * 49 / 50) < 0.02  # p/2 flips, 1/50 of which land on the same class


def test_inactive_in_eval_and_without_targets():
    dn = ContrastiveDenoising(num_classes=3, hidden_dim=D)
    assert dn.eval()(_targets(), Q) == (None, None, None, None)
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}]
    assert dn.train()(empty, Q) == (None, None, None, None)


def test_label_embedding_gets_gradients():
    dn = ContrastiveDenoising(num_classes=3, hidden_dim=D).train()
    content, *_ = dn(_targets(), Q)
    content.sum().backward()
    assert dn.label_embed.weight.grad.abs().sum() > 0

"""postprocess: joint top-k over queries x classes, sigmoid scores, boxes scaled to the original image."""

from __future__ import annotations

import torch

from common.detection.postprocess import postprocess


def test_scaling_to_original_size_and_clipping():
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.4], [0.95, 0.1, 0.2, 0.4]]])  # cxcywh
    logits = torch.tensor([[[3.0, -5.0], [-5.0, 1.0]]])
    out = postprocess(logits, boxes, torch.tensor([[100, 200]]), num_top=2)[0]  # h=100, w=200
    torch.testing.assert_close(out["scores"], torch.sigmoid(torch.tensor([3.0, 1.0])))
    assert out["labels"].tolist() == [0, 1]
    torch.testing.assert_close(out["boxes"][0], torch.tensor([80.0, 30.0, 120.0, 70.0]))
    # second box: x 170..210 -> clipped to 200; y -10..30 -> clipped to 0
    torch.testing.assert_close(out["boxes"][1], torch.tensor([170.0, 0.0, 200.0, 30.0]))


def test_topk_is_joint_over_queries_and_classes():
    """One query may contribute two classes; another query with a lower best score none."""
    logits = torch.tensor([[[4.0, 3.0, -9.0], [2.0, -9.0, -9.0], [-9.0, -9.0, 1.0]]])
    boxes = torch.rand(1, 3, 4) * 0.5 + 0.25
    out = postprocess(logits, boxes, torch.tensor([[10, 10]]), num_top=3)[0]
    assert out["labels"].tolist() == [0, 1, 0]
    assert torch.all(out["scores"][:-1] >= out["scores"][1:])
    expected = boxes[0, [0, 0, 1]]
    expected = torch.cat([expected[:, :2] - expected[:, 2:] / 2, expected[:, :2] + expected[:, 2:] / 2], 1) * 10
    torch.testing.assert_close(out["boxes"], expected)


def test_num_top_is_capped_and_batched():
    logits, boxes = torch.randn(2, 4, 3), torch.rand(2, 4, 4)
    out = postprocess(logits, boxes, torch.tensor([[50, 60], [70, 80]]), num_top=100)
    assert len(out) == 2 and all(len(o["scores"]) == 12 for o in out)
    assert out[1]["boxes"][:, 0::2].max() <= 80 and out[1]["boxes"][:, 1::2].max() <= 70

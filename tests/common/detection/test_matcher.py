"""Hungarian matcher: recovers permutations, handles empty images, repeats targets for one-to-many."""

from __future__ import annotations

import torch

from common.detection.matcher import HungarianMatcher, focal_class_cost


def _perfect(targets, num_queries, num_classes, perm):
    """Predictions that equal the targets (confident logits), scattered to query slots `perm[b]`."""
    batch = len(targets)
    logits = torch.full((batch, num_queries, num_classes), -8.0)
    boxes = torch.rand(batch, num_queries, 4) * 0.1 + 0.45
    for b, t in enumerate(targets):
        slots = perm[b][: len(t["boxes"])]
        boxes[b, slots] = t["boxes"]
        logits[b, slots, t["labels"]] = 8.0
    return {"pred_logits": logits, "pred_boxes": boxes}


def _targets(counts, num_classes=3):
    out = []
    for n in counts:
        centres = torch.rand(n, 2) * 0.6 + 0.2
        sizes = torch.rand(n, 2) * 0.2 + 0.05
        out.append({"labels": torch.randint(0, num_classes, (n,)), "boxes": torch.cat([centres, sizes], 1)})
    return out


def test_matcher_recovers_the_permutation_of_perfect_predictions():
    targets = _targets([4, 2])
    perm = [torch.randperm(10) for _ in targets]
    indices = HungarianMatcher(2, 5, 2)(_perfect(targets, 10, 3, perm), targets)
    for b, (src, tgt) in enumerate(indices):
        assert torch.equal(tgt, torch.arange(len(targets[b]["boxes"])))  # sorted by target
        assert torch.equal(src, perm[b][: len(tgt)])


def test_matcher_handles_images_without_targets():
    targets = _targets([0, 3])
    outputs = _perfect(targets, 6, 3, [torch.arange(6), torch.arange(6)])
    indices = HungarianMatcher()(outputs, targets)
    assert indices[0][0].numel() == 0 and indices[0][1].numel() == 0
    assert len(indices[1][0]) == 3
    none = HungarianMatcher()(outputs, _targets([0, 0]))
    assert all(s.numel() == 0 for s, _ in none)


def test_matcher_one_to_many_gives_each_target_k_distinct_queries():
    targets = _targets([3])
    outputs = {"pred_logits": torch.randn(1, 20, 3), "pred_boxes": torch.rand(1, 20, 4) * 0.5 + 0.1}
    src, tgt = HungarianMatcher()(outputs, targets, num_repeats=4)[0]
    assert len(src) == 12 and len(set(src.tolist())) == 12  # every query used at most once
    assert torch.bincount(tgt, minlength=3).tolist() == [4, 4, 4]


def test_one_to_many_is_capped_by_the_number_of_queries():
    targets = _targets([3])
    outputs = {"pred_logits": torch.randn(1, 5, 3), "pred_boxes": torch.rand(1, 5, 4) * 0.5 + 0.1}
    src, tgt = HungarianMatcher()(outputs, targets, num_repeats=4)[0]
    assert len(src) == 5 and tgt.max() < 3


def test_focal_class_cost_is_lower_for_the_predicted_class():
    logits = torch.tensor([[4.0, -4.0]])
    cost = focal_class_cost(logits, torch.tensor([0, 1]))
    assert cost[0, 0] < 0 < cost[0, 1]

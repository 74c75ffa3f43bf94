"""SetCriterion: ~0 for perfect predictions, grows when boxes move, gradients, dn and aux terms."""

from __future__ import annotations

import torch

from common.detection.criterion import SetCriterion, dn_indices
from common.detection.matcher import HungarianMatcher

C, Q = 3, 8


def _targets():
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


def _perfect(targets, shift=0.0):
    logits = torch.full((2, Q, C), -20.0)
    boxes = torch.tensor([0.5, 0.5, 0.1, 0.1]).repeat(2, Q, 1)
    for b, t in enumerate(targets):
        n = len(t["boxes"])
        slots = torch.arange(Q - n, Q)  # not the first slots: the matcher has to find them
        boxes[b, slots] = t["boxes"] + torch.tensor([shift, 0.0, 0.0, 0.0])
        logits[b, slots, t["labels"]] = 20.0
    return {"pred_logits": logits, "pred_boxes": boxes}


def _criterion(**kw):
    return SetCriterion(C, HungarianMatcher(2, 5, 2), **kw)


def test_perfect_predictions_cost_almost_nothing():
    targets = _targets()
    for class_loss in ("focal", "varifocal"):
        losses = _criterion(class_loss=class_loss)(_perfect(targets), targets)
        assert set(losses) == {"loss_class", "loss_bbox", "loss_giou"}
        assert sum(losses.values()).item() < 1e-4, (class_loss, losses)


def test_moving_boxes_raises_the_box_losses_in_proportion():
    targets = _targets()
    crit = _criterion()
    small, large = crit(_perfect(targets, 0.02), targets), crit(_perfect(targets, 0.08), targets)
    # L1: 3 boxes moved by d, normalised by 3 boxes, weight 5 -> 5 d
    assert abs(small["loss_bbox"].item() - 5 * 0.02) < 1e-5
    assert abs(large["loss_bbox"].item() - 5 * 0.08) < 1e-5
    assert large["loss_giou"] > small["loss_giou"] > 0


def test_varifocal_class_loss_grows_when_boxes_move():
    targets = _targets()
    crit = _criterion(class_loss="varifocal")
    # confident logits against a lower IoU target cost more
    assert crit(_perfect(targets, 0.08), targets)["loss_class"] > crit(_perfect(targets, 0.0), targets)["loss_class"]


def test_gradients_reach_logits_and_boxes_of_every_source():
    targets = _targets()

    def leaf():
        return {
            "pred_logits": torch.randn(2, Q, C, requires_grad=True),
            "pred_boxes": torch.rand(2, Q, 4).mul(0.5).add(0.2).requires_grad_(),
        }

    main, aux, enc, dn = leaf(), leaf(), leaf(), leaf()
    outputs = {
        **main,
        "aux_outputs": [aux],
        "enc_outputs": enc,
        "dn_outputs": dn,
        "dn_meta": {"pad_size": Q, "num_groups": 2, "group_size": 4, "max_targets": 2},
    }
    losses = _criterion(class_loss="varifocal")(outputs, targets)
    assert {"loss_class_0", "loss_bbox_enc", "loss_giou_dn"} <= set(losses)
    sum(losses.values()).backward()
    for src in (main, aux, enc, dn):
        assert src["pred_logits"].grad.abs().sum() > 0 and src["pred_boxes"].grad.abs().sum() > 0


def test_dn_indices_point_at_the_positive_copies():
    meta = {"pad_size": 12, "num_groups": 2, "group_size": 6, "max_targets": 3}
    pairs = dn_indices(meta, [{"boxes": torch.zeros(2, 4)}, {"boxes": torch.zeros(0, 4)}], "cpu")
    assert pairs[0][0].tolist() == [0, 1, 6, 7] and pairs[0][1].tolist() == [0, 1, 0, 1]
    assert pairs[1][0].numel() == 0


def test_images_without_targets_give_finite_losses():
    targets = [{"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4)}] * 2
    outputs = {"pred_logits": torch.randn(2, Q, C, requires_grad=True), "pred_boxes": torch.rand(2, Q, 4)}
    losses = _criterion()(outputs, targets)
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_bbox"].item() == 0.0 and losses["loss_class"].item() > 0

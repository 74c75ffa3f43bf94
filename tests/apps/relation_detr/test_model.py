"""RelationDETR: the relation bias reaches the main decoder only, the hybrid branch is training-only,
memory fusion, gradients, and the hybrid criterion's one-to-many loss."""

from __future__ import annotations

import pytest
import torch

from apps.relation_detr.criterion import HybridSetCriterion
from apps.relation_detr.model import BiasedQuerySelfAttention, MemoryFusionEncoder, RelationDETR
from common.detection.decoder import QuerySelfAttention, attention_bias
from common.detection.matcher import HungarianMatcher

SMALL = dict(
    backbone="resnet18", hidden_dim=32, num_heads=4, ffn_dim=64, num_encoder_layers=1, num_decoder_layers=3,
    num_queries=12, num_dn_queries=8, num_hybrid_queries=20, num_levels=2, out_indices=(3, 4), image_size=64,
)  # fmt: skip


def _targets():
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.2]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
    ]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return RelationDETR(num_classes=3, **SMALL)


def _images():
    return torch.randn(2, 3, 64, 64), torch.zeros(2, 64, 64, dtype=torch.bool)


def test_relation_bias_goes_to_main_and_denoising_queries_only(model, monkeypatch):
    sizes = []
    original = model.relation.forward

    def spy(src, tgt=None):
        sizes.append(src.shape[1])
        return original(src, tgt)

    monkeypatch.setattr(model.relation, "forward", spy)
    model.train()
    out = model.forward_train(*_images(), _targets())
    pad = out["dn_meta"]["pad_size"]
    # layers 1 and 2 of the main set (denoising + matching queries); never the 20 hybrid queries
    assert sizes == [pad + SMALL["num_queries"]] * (SMALL["num_decoder_layers"] - 1)
    assert out["hybrid_outputs"]["pred_logits"].shape == (2, 20, 3)
    assert len(out["hybrid_outputs"]["aux_outputs"]) == SMALL["num_decoder_layers"] - 1


def test_hybrid_branch_is_absent_in_eval(model):
    model.eval()
    with torch.no_grad():
        out = model.run(*_images(), _targets())
        logits, boxes = model(*_images())
    assert "hybrid_outputs" not in out and "dn_outputs" not in out
    assert logits.shape == (2, SMALL["num_queries"], 3) and boxes.shape == (2, SMALL["num_queries"], 4)


def test_relation_bias_changes_the_decoder_and_can_be_switched_off(model, monkeypatch):
    model.eval()
    images, masks = _images()
    conv = model.relation.proj[0]
    saved = conv.weight.detach().clone()
    with torch.no_grad():
        with_bias = model(images, masks)[0]
        conv.weight.zero_()  # the same bias for every pair of boxes: a softmax does not notice it
        uniform = model(images, masks)[0]
        conv.weight.copy_(saved)
        monkeypatch.setattr(model, "decoder_bias_fn", lambda: None)
        without = model(images, masks)[0]
    assert torch.allclose(uniform, without, atol=1e-5)
    assert not torch.allclose(with_bias, without, atol=1e-4)
    plain = RelationDETR(num_classes=3, use_relation=False, **SMALL)
    assert plain.relation is None and plain.decoder_bias_fn() is None


def test_decoder_self_attention_is_the_export_friendly_one_with_the_same_math(model):
    """Every decoder layer runs `BiasedQuerySelfAttention`; with the same weights it gives SDPA's output for a
    relation-like bias plus a denoising-like -inf mask (float32; 1e-5 covers the different summation order)."""
    assert all(type(layer.self_attn) is BiasedQuerySelfAttention for layer in model.decoder.layers)
    torch.manual_seed(0)
    sdpa = QuerySelfAttention(32, 4)
    explicit = BiasedQuerySelfAttention(32, 4)
    explicit.load_state_dict(sdpa.state_dict())
    x, pos = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    mask = torch.zeros(7, 7, dtype=torch.bool)
    mask[:3, 3:] = True  # the first three queries (a denoising group) cannot see the rest
    bias = attention_bias(mask, torch.rand(2, 4, 7, 7) * 3)
    torch.testing.assert_close(explicit(x, pos, bias), sdpa(x, pos, bias), rtol=1e-5, atol=1e-5)


def test_memory_fusion_encoder_is_used(model):
    assert isinstance(model.encoder, MemoryFusionEncoder)
    assert model.encoder.fusion[0].in_features == (SMALL["num_encoder_layers"] + 1) * SMALL["hidden_dim"]
    assert not isinstance(RelationDETR(num_classes=3, memory_fusion=False, **SMALL).encoder, MemoryFusionEncoder)


def test_hybrid_criterion_trains_every_part(model):
    model.train()
    model.zero_grad()
    targets = _targets()
    criterion = HybridSetCriterion(3, HungarianMatcher(2, 5, 2), hybrid_assign=3)
    losses = criterion(model.forward_train(*_images(), targets), targets)
    assert {"loss_class_hybrid", "loss_bbox_enc_hybrid", "loss_giou_0_hybrid", "loss_class_dn"} <= set(losses)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("relation.proj.0.weight", "hybrid_selection.class_head.weight", "hybrid_selection.content.weight",
                 "encoder.fusion.0.weight", "denoising.label_embed.weight", "backbone.body.conv1.weight"):  # fmt: skip
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name


@pytest.mark.parametrize("class_loss", ["focal", "varifocal"])
def test_hybrid_loss_is_the_main_loss_on_a_set_tiled_hybrid_assign_times(class_loss):
    """One-to-many matching and its normalisation, term by term. Tile the main predictions 3 times as the hybrid
    set and let each target take 3 queries: the best one-to-many assignment costs exactly 3x the one-to-one
    optimum and, with continuous random inputs (a unique optimum), gives each target the 3 copies of its
    one-to-one match. Every term then sums 3x the main term (the class term over 3x the queries too) and is
    divided by 3x the boxes, so each `_hybrid` loss equals its main loss (float32 sums in another order: 1e-5)."""
    torch.manual_seed(0)
    targets, repeats = _targets(), 3
    main = {"pred_logits": torch.randn(2, 10, 3), "pred_boxes": torch.rand(2, 10, 4) * 0.5 + 0.2}
    hybrid = {k: torch.cat([v] * repeats, 1) for k, v in main.items()}
    criterion = HybridSetCriterion(3, HungarianMatcher(), hybrid_assign=repeats, class_loss=class_loss)
    one_to_one = criterion.matcher(main, targets)
    one_to_many = criterion.matcher(hybrid, targets, num_repeats=repeats)
    for (src, tgt), (src_h, tgt_h) in zip(one_to_one, one_to_many):
        expected = sorted((int(s) % 10, int(t)) for s, t in zip(src, tgt) for _ in range(repeats))
        assert sorted((int(s) % 10, int(t)) for s, t in zip(src_h, tgt_h)) == expected
    losses = criterion({**main, "hybrid_outputs": hybrid}, targets)
    for term in ("loss_class", "loss_bbox", "loss_giou"):
        torch.testing.assert_close(losses[f"{term}_hybrid"], losses[term], rtol=1e-5, atol=0)
    halved = HybridSetCriterion(3, HungarianMatcher(), hybrid_assign=repeats, class_loss=class_loss, weight_hybrid=0.5)
    torch.testing.assert_close(halved({**main, "hybrid_outputs": hybrid}, targets)["loss_bbox_hybrid"],
                               0.5 * losses["loss_bbox"], rtol=1e-5, atol=0)  # fmt: skip

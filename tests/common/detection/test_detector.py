"""The DINO-style base detector: outputs, denoising split, gradients, two-stage selection, hooks."""

from __future__ import annotations

from functools import partial

import pytest
import torch

from common.detection.criterion import SetCriterion
from common.detection.decoder import DeformableDecoder, QuerySelfAttention
from common.detection.detector import DINODetector
from common.detection.encoder import DeformableEncoder
from common.detection.matcher import HungarianMatcher
from common.detection.query_selection import encoder_proposals
from common.errors import ConfigError
from tests.common.detection.test_encoder import make_tokens

SMALL = dict(
    backbone="resnet18",
    hidden_dim=32,
    num_heads=4,
    ffn_dim=64,
    num_encoder_layers=1,
    num_decoder_layers=2,
    num_queries=10,
    num_dn_queries=8,
    image_size=96,
)


def targets():
    return [
        {"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.3, 0.2]])},
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]])},
    ]


def test_forward_shapes_and_mask_none():
    model = DINODetector(3, **SMALL).eval()
    images = torch.randn(2, 3, 96, 96)
    logits, boxes = model(images)
    assert logits.shape == (2, 10, 3) and boxes.shape == (2, 10, 4)
    assert ((boxes >= 0) & (boxes <= 1)).all()
    again = model(images, torch.zeros(2, 64, 64, dtype=torch.bool))
    torch.testing.assert_close(again[0], logits)
    spec = model.export_spec()
    assert spec["inputs"]["images"]["shape"] == ["B", 3, "H", "W"] and list(spec["outputs"]) == ["logits", "boxes"]


def test_forward_train_outputs_and_every_parameter_learns():
    model = DINODetector(3, **SMALL).train()
    images, masks = torch.randn(2, 3, 96, 96), torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[1, :, 72:] = True
    out = model.forward_train(images, masks, targets())
    assert out["pred_logits"].shape == (2, 10, 3) and len(out["aux_outputs"]) == 1
    assert out["enc_outputs"]["pred_boxes"].shape == (2, 10, 4)
    pad = out["dn_meta"]["pad_size"]
    assert pad == 8 and out["dn_outputs"]["pred_logits"].shape == (2, pad, 3)
    criterion = SetCriterion(3, HungarianMatcher())
    losses = criterion(out, targets())
    assert {"loss_class", "loss_bbox_0", "loss_giou_enc", "loss_class_dn"} <= set(losses)
    sum(losses.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    # Zero-initialised layers (last box-head layers, MSDA offsets, timm's last BN of each block) pass no
    # gradient to what feeds them at step 0; after one step every parameter must learn.
    torch.optim.SGD(model.parameters(), lr=0.01).step()
    model.zero_grad()
    sum(criterion(model.forward_train(images, masks, targets()), targets()).values()).backward()
    silent = [n for n, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert silent == []


def test_denoising_off_and_eval_has_no_dn():
    model = DINODetector(3, **{**SMALL, "num_dn_queries": 0}).train()
    out = model.forward_train(torch.randn(2, 3, 96, 96), None, targets())
    assert "dn_outputs" not in out and model.denoising is None
    model = DINODetector(3, **SMALL).eval()
    assert "dn_outputs" not in model.forward_train(torch.randn(1, 3, 96, 96), None, targets()[:1])


def test_denoising_queries_do_not_change_matching_outputs():
    """The matching queries cannot see the denoising ones (attention mask), so their outputs are the same
    with and without denoising (the DN label embeddings and noise differ run to run)."""
    model = DINODetector(3, **SMALL).train()
    images = torch.randn(2, 3, 96, 96)
    with_dn = model.forward_train(images, None, targets())
    model.denoising.train(False)  # denoising returns None when not training
    without = model.forward_train(images, None, targets())
    assert "dn_outputs" in with_dn and "dn_outputs" not in without
    torch.testing.assert_close(with_dn["pred_logits"], without["pred_logits"], rtol=1e-4, atol=1e-5)


def test_two_stage_picks_top_scoring_usable_tokens():
    tokens = make_tokens(dim=32, pad_cols=4)
    proposals, usable = encoder_proposals(tokens)
    assert not usable[tokens.padding].any() and torch.isinf(proposals[~usable]).all()
    torch.testing.assert_close(proposals[usable].sigmoid()[:, :2], tokens.token_centres()[usable])
    model = DINODetector(3, **SMALL)
    sel = model.query_selection
    memory = torch.randn(2, tokens.src.shape[1], 32)
    out = sel(memory, tokens)
    assert out["content"].shape == (2, 10, 32) and not out["reference_unsigmoid"].requires_grad
    score = sel.class_head(sel.project(memory, usable)).max(-1).values.masked_fill(~usable, float("-inf"))
    best = score.topk(10, dim=1).values
    got = out["enc_outputs"]["pred_logits"].max(-1).values
    torch.testing.assert_close(got, best)


def test_decoder_bias_hook_is_used():
    class Biased(DINODetector):
        def decoder_bias_fn(self):
            def fn(i, previous, current):
                # block every query from every other one: self-attention becomes the identity mixing
                q = current.shape[1]
                eye = torch.eye(q, dtype=torch.bool)
                return torch.zeros(q, q).masked_fill(~eye, float("-inf"))

            return fn

    torch.manual_seed(0)
    plain = DINODetector(3, **SMALL).eval()
    biased = Biased(3, **SMALL).eval()
    biased.load_state_dict(plain.state_dict())
    images = torch.randn(1, 3, 96, 96)
    assert not torch.allclose(plain(images)[0], biased(images)[0])


def test_construction_factories_build_what_the_variant_names():
    """`encoder=` / `decoder=` are what gets built, in the base's place in the construction order: factories that
    build the same parameters leave every seeded initial weight (and every state_dict key) as the default's."""

    class Encoder(DeformableEncoder):
        pass

    class Attention(QuerySelfAttention):
        pass

    torch.manual_seed(0)
    plain = DINODetector(3, **SMALL)
    torch.manual_seed(0)
    variant = DINODetector(3, **SMALL, encoder=Encoder, decoder=partial(DeformableDecoder, attn_layer=Attention))
    assert type(variant.encoder) is Encoder
    assert all(type(layer.self_attn) is Attention for layer in variant.decoder.layers)
    expected, got = plain.state_dict(), variant.state_dict()
    assert list(got) == list(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_bad_config_names_key():
    with pytest.raises(ConfigError, match="num_heads"):
        DINODetector(3, **{**SMALL, "num_heads": 5})
    with pytest.raises(ConfigError, match="class_names"):
        DINODetector(3, class_names=["a", "b"], **SMALL)

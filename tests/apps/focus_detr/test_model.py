"""Focus-DETR's properties: foreground tokens chosen by score, a cascade that shrinks per layer as configured,
multi-category object tokens for the dual attention, background tokens untouched, the select loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from apps.focus_detr.criterion import FocusCriterion, foreground_labels
from apps.focus_detr.model import DualAttentionEncoderLayer, FocusDETR, ForegroundTokenSelector, gather_tokens
from common.detection.matcher import HungarianMatcher
from common.errors import ConfigError
from tests.common.detection.test_encoder import make_tokens

SMALL = dict(
    backbone="resnet18",
    hidden_dim=32,
    num_heads=4,
    ffn_dim=64,
    num_encoder_layers=3,
    num_decoder_layers=2,
    num_queries=10,
    num_dn_queries=8,
    num_attn_tokens=12,
    cascade=[1.0, 0.6, 0.2],
    image_size=96,
)
RANGES = [[-1, 12], [12, 24], [24, 48], [48, 1e9]]


def targets(size=(96, 96)):
    return [
        {
            "labels": torch.tensor([0, 2]),
            "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.4, 0.3]]),
            "size": torch.tensor(size),
        },
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.4]]), "size": torch.tensor(size)},
    ]


def test_forward_and_train_outputs():
    model = FocusDETR(3, **SMALL).eval()
    logits, boxes = model(torch.randn(2, 3, 96, 96))
    assert logits.shape == (2, 10, 3) and boxes.shape == (2, 10, 4)
    out = model.train().forward_train(torch.randn(2, 3, 96, 96), None, targets())
    n = out["fg_logits"].shape[1]
    assert n == 12 * 12 + 6 * 6 + 3 * 3 + 2 * 2  # strides 8, 16, 32 and the extra 64
    assert out["fg_centres"].shape == (2, n, 2) and out["fg_levels"].shape == (n,)


def test_cascade_keeps_the_stated_number_of_tokens():
    model = FocusDETR(3, **SMALL, keep_ratio=0.5).eval()
    n = 193
    budget = int(n * 0.5) + 1
    out = model.forward_train(torch.randn(1, 3, 96, 96), None, [])
    assert out["num_kept"] == [int(budget * c) for c in (1.0, 0.6, 0.2)] == [97, 58, 19]
    # with padding the budget counts the real tokens of the least padded image
    masks = torch.zeros(2, 96, 96, dtype=torch.bool)
    masks[:, :, 48:] = True
    out = model.forward_train(torch.randn(2, 3, 96, 96), masks, [])
    real = int((~out["fg_padding"]).sum(1).max())
    assert out["num_kept"][0] == int(real * 0.5) + 1
    dense = FocusDETR(3, **SMALL, dense_encoder=True).eval()
    assert dense.forward_train(torch.randn(1, 3, 96, 96), None, [])["num_kept"] == [n] * 3


def test_background_tokens_pass_through_untouched():
    model = FocusDETR(3, **SMALL).eval()
    out = model.forward_train(torch.randn(2, 3, 96, 96), None, [])
    kept = torch.zeros_like(out["fg_padding"])
    kept.scatter_(1, out["fg_logits"].topk(out["num_kept"][0], dim=1).indices, True)
    tokens, memory = out["tokens"], out["memory"]
    torch.testing.assert_close(memory[~kept], tokens.src[~kept], rtol=0, atol=0)
    assert (memory[kept] - tokens.src[kept]).abs().amax(-1).min() > 0  # every kept token was updated


def test_each_layer_updates_the_top_scored_tokens_of_its_cascade_budget():
    """With the default config's keep ratio and cascade: layer i gets exactly the K_i best foreground scores (in
    score order), K_i = int(K * cascade_i) shrinks per layer, and every layer scores with the two-stage class head."""
    config = yaml.safe_load((Path(__file__).parents[3] / "configs/app/focus_detr.yaml").read_text())["model"]
    keep_ratio, cascade = config["keep_ratio"], config["cascade"]
    model = FocusDETR(3, **{**SMALL, "num_encoder_layers": len(cascade), "cascade": cascade}, keep_ratio=keep_ratio)
    seen = []
    for layer in model.encoder.layers:  # args: query, query_pos, fg_logits, reference_points, value, tokens, head
        layer.register_forward_hook(lambda mod, args, out: seen.append((args[2], args[6])))
    out = model.eval().forward_train(torch.randn(2, 3, 96, 96), None, [])
    budget = int(out["fg_logits"].shape[1] * keep_ratio) + 1  # no padding: every token is real
    assert out["num_kept"] == [int(budget * c) for c in cascade]
    assert all(a > b for a, b in zip(out["num_kept"], out["num_kept"][1:]))  # the cascade shrinks
    best_first = out["fg_logits"].sort(dim=1, descending=True).values
    for (fg, class_head), k in zip(seen, out["num_kept"]):
        torch.testing.assert_close(fg, best_first[:, :k], rtol=0, atol=0)
        assert class_head is model.query_selection.class_head


def test_dual_attention_picks_multi_category_tokens_and_updates_only_them():
    """The self-attention runs on the top `num_attn_tokens` by max_c sigmoid(class logit_c) x sigmoid(fg logit);
    the other kept tokens reach the deformable attention bit-for-bit unchanged."""
    torch.manual_seed(0)
    tokens = make_tokens(batch=2, dim=16)
    layer = DualAttentionEncoderLayer(16, 2, 2, 2, 32, 0.0, num_attn_tokens=6).eval()
    class_head = nn.Linear(16, 4)
    query, fg = tokens.src, torch.randn(2, tokens.src.shape[1])
    seen = {}
    layer.self_attn.register_forward_pre_hook(lambda mod, args: seen.update(picked=args[0]))
    layer.deformable.register_forward_pre_hook(lambda mod, args: seen.update(query=args[0]))
    with torch.no_grad():
        layer(query, tokens.pos, fg, tokens.reference_points(), query, tokens, class_head)
        score = class_head(query).sigmoid().max(-1).values * fg.sigmoid()
    top = score.topk(6, dim=1).indices
    assert any(set(t.tolist()) != set(f.tolist()) for t, f in zip(top, fg.topk(6, dim=1).indices))  # classes matter
    torch.testing.assert_close(seen["picked"], gather_tokens(query, top), rtol=0, atol=0)
    picked = torch.zeros(fg.shape, dtype=torch.bool).scatter_(1, top, True)
    torch.testing.assert_close(seen["query"][~picked], query[~picked], rtol=0, atol=0)
    assert (seen["query"][picked] - query[picked]).abs().amax(-1).min() > 0


def test_top_down_modulation_feeds_finer_levels():
    """Scores go coarsest first; level l's scorer input is feat_l * (1 + alpha_l * up(score_{l+1}))."""
    torch.manual_seed(0)
    selector = ForegroundTokenSelector(16, 2)
    tokens = make_tokens(batch=1, dim=16)
    seen = []
    selector.scorer.register_forward_hook(lambda mod, args, out: seen.append((args[0], out)))
    scores = selector(tokens)
    (coarse_in, coarse_out), (fine_in, fine_out) = seen
    assert coarse_in.shape[1] == 16 and fine_in.shape[1] == 64  # 4x4 level first, then 8x8
    feats = selector.project(tokens.src)
    torch.testing.assert_close(coarse_in, feats[:, 64:])
    up = F.interpolate(coarse_out.view(1, 1, 4, 4), size=(8, 8), mode="bilinear", align_corners=True).flatten(1)
    torch.testing.assert_close(fine_in, feats[:, :64] * (1 + selector.alpha[0] * up[..., None]))
    torch.testing.assert_close(scores, torch.cat([fine_out, coarse_out], 1))


def test_every_named_component_learns():
    model = FocusDETR(3, **SMALL).train()
    criterion = FocusCriterion(3, HungarianMatcher(), size_ranges=RANGES)
    images = torch.randn(2, 3, 96, 96)

    def backward():
        model.zero_grad()
        losses = criterion(model.forward_train(images, None, targets()), targets())
        assert "loss_select" in losses and torch.isfinite(losses["loss_select"])
        sum(losses.values()).backward()

    backward()
    torch.optim.SGD(model.parameters(), lr=0.01).step()  # wake zero-initialised layers (see test_detector)
    backward()
    silent = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []
    for name in ("selector.alpha", "selector.scorer", "layers.0.self_attn", "layers.2.deformable"):
        assert any(name in n for n, _ in model.encoder.named_parameters()), name


def test_foreground_labels_fcos_style():
    # one 100x100 image, one box x 20..60, y 20..40 (w 40, h 20): cx 0.4, cy 0.3
    boxes = torch.tensor([[0.4, 0.3, 0.4, 0.2]])
    target = [{"boxes": boxes, "labels": torch.tensor([0]), "size": torch.tensor([100, 100])}]
    centres = torch.tensor(
        [
            [0.30, 0.30],  # inside: l 10 t 10 r 30 b 10 -> max 30
            [0.40, 0.30],  # inside, centre: l 20 t 10 r 20 b 10 -> max 20
            [0.10, 0.30],  # outside (left of the box)
            [0.40, 0.30],  # same point as 1, on another level
            [0.21, 0.21],  # inside near the corner: max = r 39
        ]
    )[None]
    levels = torch.tensor([0, 1, 0, 0, 2])
    ranges = [[-1, 25], [25, 50], [50, 100]]
    labels = foreground_labels(centres, levels, target, ranges)
    # token 0: max 30 not in level 0's [-1, 25]; token 1: 20 not in level 1's [25, 50]; token 3: 20 in
    # level 0's range -> fg; token 4: 39 not in level 2's [50, 100]
    assert labels.tolist() == [[0.0, 0.0, 0.0, 1.0, 0.0]]
    labels = foreground_labels(centres, torch.tensor([1, 0, 0, 0, 1]), target, ranges)
    assert labels.tolist() == [[1.0, 1.0, 0.0, 1.0, 1.0]]
    assert (
        foreground_labels(centres, levels, [{"boxes": torch.zeros(0, 4), "size": torch.tensor([9, 9])}], ranges).sum()
        == 0
    )


def test_bad_values_name_their_key():
    with pytest.raises(ConfigError, match="cascade"):
        FocusDETR(3, **{**SMALL, "cascade": [1.0, 0.5]})
    with pytest.raises(ConfigError, match="keep_ratio"):
        FocusDETR(3, **SMALL, keep_ratio=0.0)
    with pytest.raises(ConfigError, match="size_ranges"):
        FocusCriterion(3, HungarianMatcher(), size_ranges=[[10, 5]])


def test_bad_model_value_names_its_key():
    from omegaconf import OmegaConf

    from common.errors import ConfigError
    from common.pipeline.build import build_model

    cfg = OmegaConf.create(
        {"_target_": "apps.focus_detr.model.FocusDETR", "num_classes": 5, "keep_ratio": 1.5, "backbone": "resnet18"}
    )
    with pytest.raises(ConfigError, match=r"model\.keep_ratio=1\.5"):
        build_model(cfg)


def test_dense_baseline_is_the_plain_deformable_encoder():
    """dense_encoder: every token updated, no scorer, no select loss, and every parameter learns."""
    model = FocusDETR(3, **SMALL, dense_encoder=True).train()
    assert model.encoder.selector is None
    criterion = FocusCriterion(3, HungarianMatcher(), size_ranges=RANGES)
    images = torch.randn(2, 3, 96, 96)
    for _ in range(2):  # the second pass after one step (zero-initialised layers, see test_detector)
        model.zero_grad()
        losses = criterion(model.forward_train(images, None, targets()), targets())
        assert "loss_select" not in losses
        sum(losses.values()).backward()
        torch.optim.SGD(model.parameters(), lr=0.01).step()
    assert [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0] == []

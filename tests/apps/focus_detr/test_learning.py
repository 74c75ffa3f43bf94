"""Focus-DETR learns: one epoch of the default config (250 steps from scratch, seed 42) keeps most of the
validation map_50 that the README measured for that epoch of the same run (slow); and, fast, its foreground
scorer learns to find objects in images it was not trained on."""

from __future__ import annotations

import pytest
import torch

from apps.focus_detr.criterion import FocusCriterion, foreground_labels
from apps.focus_detr.model import FocusDETR
from common.detection.matcher import HungarianMatcher
from tests.apps.detr_first_epoch import assert_first_epoch_keeps_map_50
from tests.apps.focus_detr.test_model import RANGES, SMALL

# README (Results table, `make train app=focus_detr`, seed 42): val map_50 0.181 after epoch 1.
README_VAL_MAP_50_EPOCH_1 = 0.181


@pytest.mark.slow
def test_one_epoch_of_the_default_keeps_most_of_the_measured_map_50(tmp_path):
    assert_first_epoch_keeps_map_50("focus_detr", README_VAL_MAP_50_EPOCH_1, tmp_path)


def _rectangles(seed: int, n: int, size: int = 64) -> tuple[torch.Tensor, list[dict]]:
    """n noise images, each with two solid rectangles (20-50% of the side) raised in the channel of their class."""
    g = torch.Generator().manual_seed(seed)
    images, targets = torch.randn(n, 3, size, size, generator=g) * 0.3, []
    for b in range(n):
        boxes, labels = [], []
        for _ in range(2):
            w, h = (torch.rand(2, generator=g) * 0.3 + 0.2).tolist()
            side = max(w, h)
            cx, cy = (torch.rand(2, generator=g) * (1 - side) + side / 2).tolist()
            label = int(torch.randint(3, (1,), generator=g))
            x0, x1 = round((cx - w / 2) * size), round((cx + w / 2) * size)
            y0, y1 = round((cy - h / 2) * size), round((cy + h / 2) * size)
            images[b, label, y0:y1, x0:x1] += 2.0
            boxes.append([(x0 + x1) / 2 / size, (y0 + y1) / 2 / size, (x1 - x0) / size, (y1 - y0) / size])
            labels.append(label)
        targets.append({"boxes": torch.tensor(boxes), "labels": torch.tensor(labels), "size": torch.tensor([size] * 2)})
    return images, targets


def _foreground_auc(model: FocusDETR, images: torch.Tensor, targets: list[dict]) -> float:
    """P(a foreground token outscores a background token) for the FCOS-style labels of the select loss."""
    with torch.no_grad():
        out = model.eval().forward_train(images, None, targets)
    labels = foreground_labels(out["fg_centres"], out["fg_levels"], targets, RANGES).flatten().bool()
    scores = out["fg_logits"].flatten()
    return (scores[labels][:, None] > scores[~labels][None]).float().mean().item()


def test_foreground_scores_learn_to_find_objects_in_unseen_images():
    """The fast check: 15 AdamW steps of the full Focus-DETR loss on four 64-px images make the foreground scorer
    rank the foreground tokens of four *other* images above their background. AUC is the chance that a foreground
    token outscores a background one: 0.5 is chance, the untrained scorer is measured here (0.34 at this seed).
    The bar, 0.8 and +0.25 over the untrained scorer, asks for a scorer that finds objects it never saw; measured:
    0.90 after 15 steps, on a plateau (0.88-0.90 from step 10 to 25), so numerics cannot carry it across the bar."""
    torch.manual_seed(0)
    model = FocusDETR(3, **SMALL)
    criterion = FocusCriterion(3, HungarianMatcher(), size_ranges=RANGES)
    images, targets = _rectangles(seed=0, n=4)
    unseen = _rectangles(seed=1, n=4)
    before = _foreground_auc(model, *unseen)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(15):
        losses = criterion(model.train().forward_train(images, None, targets), targets)
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    after = _foreground_auc(model, *unseen)
    assert after > 0.8 and after > before + 0.25, (before, after)

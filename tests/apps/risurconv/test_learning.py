"""RISurConv learns: a few seconds of training on four procedural classes beats chance under arbitrary rotations
(trained upright, tested under SO(3)); the full default (slow) meets the issue's targets."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from apps.risurconv.model import create
from common.pointcloud.shapes import CLASSES, make_split
from common.pointcloud.transforms import random_rotations, rotate
from tests.conftest import run_cli

FOUR = ["box", "sphere", "torus", "arrow"]
TINY = {"npoints": [32, 16, 8, 4], "ks": [8, 8, 8, 4], "widths": [16, 32, 32, 32, 32], "transformer_heads": 2}


def four_classes(per_class: int, seed: int):
    split = make_split(per_class, 128, seed)
    keep = torch.isin(torch.from_numpy(split["label"]), torch.tensor([CLASSES.index(c) for c in FOUR]))
    labels = torch.tensor([FOUR.index(CLASSES[i]) for i in split["label"][keep.numpy()]])
    return torch.from_numpy(split["points"][keep.numpy()]), labels


def test_a_few_seconds_of_training_beat_chance_under_so3():
    """24 upright shapes per class, 60 Adam steps; test: 10 shapes per class under random SO(3) rotations.
    Chance is 0.25; 0.6 needs real learning (with 40 test shapes, 0.6 is 7 standard errors above chance)."""
    torch.manual_seed(0)
    train_x, train_y = four_classes(24, seed=1)
    test_x, test_y = four_classes(10, seed=2)
    model = create(4, num_points=128, risurconv=TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        idx = torch.randint(0, len(train_y), (16,))
        x = rotate(train_x[idx], random_rotations("z", 16))
        loss = F.cross_entropy(model(x), train_y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(rotate(test_x, random_rotations("so3", len(test_y)))).argmax(-1)
    assert (pred == test_y).float().mean() >= 0.6


@pytest.mark.slow
def test_default_training_meets_the_targets(tmp_path):
    """`make train app=risurconv` (15 epochs, 2 CPU cores: minutes): z/SO3 accuracy >= 0.90 and within 1 point of
    z/z (the issue's targets; invariance makes the two differ only by which test rotations are drawn)."""
    run_cli("train", "app=risurconv", "trainer=cpu", "callbacks.progress_bar=null", root=tmp_path, timeout=3600)
    test = json.loads(next((tmp_path / "runs" / "risurconv").glob("2*/metrics.json")).read_text())["test"]
    assert test["acc_so3"] >= 0.90 and abs(test["acc_z"] - test["acc_so3"]) <= 0.01

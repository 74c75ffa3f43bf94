"""Focus-DETR's predict on awkward images (issue 20): an elongated image the resize can still serve runs through
the real model; one it cannot serve is an InputError naming the size, not torchvision's ValueError."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from apps.focus_detr.model import FocusDETR
from common.detection.predict import predict
from common.errors import InputError
from tests.apps.focus_detr.test_model import SMALL

SPEC = {"spec": {"preprocess": {"eval_size": 128, "max_size": 213}}}  # the data module's default sizes


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return FocusDETR(3, **SMALL).eval()


def test_elongated_image_within_the_resize_runs(model, tmp_path):
    path = tmp_path / "strip.png"
    Image.new("RGB", (2000, 10), (90, 120, 30)).save(path)  # resized to 213 x 1 pixels
    result = json.loads(predict(model, path, tmp_path / "out", SPEC)["predictions"].read_text())
    assert result["image_size"] == [2000, 10]


def test_image_too_elongated_for_the_resize_is_an_input_error(model, tmp_path):
    path = tmp_path / "line.png"
    Image.new("RGB", (5000, 10), (90, 120, 30)).save(path)  # would be resized to 213 x 0 pixels
    with pytest.raises(InputError, match=r"aspect ratio too extreme \(5000 x 10 pixels\)"):
        predict(model, path, tmp_path / "out", SPEC)

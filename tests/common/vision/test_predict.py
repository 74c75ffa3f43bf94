"""The shared vision predict: grey/RGB conversion and resize, top-5 with probabilities, the picture,
class names from the export spec, and unreadable files as InputError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from common.errors import InputError
from common.vision.models import ImageClassifier
from common.vision.predict import load_image, predict


class MeanBrightness(nn.Module):
    """Logits that rank class i by closeness of the mean pixel to i/(K-1) in [-1, 1]: predictable outputs."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))[:, None]
        centres = torch.linspace(-1, 1, self.k)[None]
        return -10 * (m - centres).abs()


def _model(k=7, chans=1):
    return ImageClassifier(MeanBrightness(k), k, chans, 12, [f"c{i}" for i in range(k)])


def test_rgb_photo_to_grey_model(tmp_path, capsys):
    path = tmp_path / "white.jpg"
    Image.fromarray(np.full((40, 30, 3), 255, np.uint8)).save(path)
    x = load_image(path, 1, 12)
    assert x.shape == (1, 1, 12, 12) and torch.allclose(x, torch.ones_like(x), atol=1e-2)
    spec = {"spec": {"classes": [f"name{i}" for i in range(7)]}}
    written = predict(_model(), path, tmp_path / "out", spec)
    result = json.loads(written["prediction"].read_text())
    assert [r["index"] for r in result["top"]] == [6, 5, 4, 3, 2]  # white = the last class, then its neighbours
    assert result["top"][0]["class"] == "name6"  # names from the export spec
    probs = [r["probability"] for r in result["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
    assert written["picture"].is_file() and "name6" in capsys.readouterr().out


def test_grey_png_to_rgb_model_and_few_classes(tmp_path):
    path = tmp_path / "black.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    model = ImageClassifier(MeanBrightness(3), 3, 3, 12)
    assert load_image(path, 3, 12).shape == (1, 3, 12, 12)
    result = json.loads(predict(model, path, tmp_path / "o", None)["prediction"].read_text())
    assert len(result["top"]) == 3 and result["top"][0]["class"] == "0"


def test_unreadable_and_missing_files(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    with pytest.raises(InputError, match="cannot read image"):
        predict(_model(), bad, tmp_path / "o", None)
    with pytest.raises(InputError, match="not found"):
        predict(_model(), tmp_path / "absent.png", tmp_path / "o", None)


def test_export_spec_carries_classes_and_shapes():
    model = _model()
    spec = model.export_spec()
    assert spec["inputs"]["image"]["shape"] == ["N", 1, 12, 12] and spec["outputs"]["logits"]["shape"] == ["N", 7]
    assert spec["classes"] == [f"c{i}" for i in range(7)]
    (x,) = model.example_inputs()
    assert x.shape == (2, 1, 12, 12) and model(x).shape == (2, 7)

"""The DETR exports have dynamic image height and width: the spec says so, export checks the graph at two sizes,
and the ONNX graph runs an image the size the predictor makes of a photo (not the traced square) like PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from apps.focus_detr.model import FocusDETR
from apps.relation_detr.model import RelationDETR
from common.detection.detector import DINODetector
from common.detection.predict import preprocessing
from common.detection.transforms import apply, eval_transform
from common.pipeline.export import ONNX_ATOL, ONNX_RTOL, export_onnx

# three levels, strides 16, 32 and an extra 64: the mapper's extra-level path at half the graph of four levels
SMALL = dict(
    backbone="resnet18",
    out_indices=(3, 4),
    num_levels=3,
    hidden_dim=32,
    num_heads=4,
    ffn_dim=64,
    num_encoder_layers=2,
    num_decoder_layers=2,
    num_queries=20,
    num_dn_queries=8,
    image_size=128,
    max_size=213,
)


def predict_input(width: int, height: int, model) -> torch.Tensor:
    """A random photo of that size after the predictor's evaluation transform: [1, 3, h, w]."""
    pixels = (np.random.default_rng(0).random((height, width, 3)) * 255).astype(np.uint8)
    photo = Image.fromarray(pixels)
    x, _ = apply(eval_transform(*preprocessing(model, None)), photo, torch.zeros(0, 4), torch.zeros(0), 0)
    return x[None]


def test_spec_has_dynamic_height_and_width_from_the_coarsest_level_up():
    model = DINODetector(3, **SMALL).eval()
    spec = model.export_spec()["inputs"]["images"]
    assert spec["shape"] == ["B", 3, "H", "W"]
    side = model.min_image_side()
    assert spec["min"] == {"H": side, "W": side} and side == 64 + 1
    # the smallest side gives the coarsest level 2 pixels (what the traced graph assumes), one less gives 1
    assert model.tokens(torch.randn(1, 3, side, side), None).level_shapes[-1] == (2, 2)
    assert model.tokens(torch.randn(1, 3, side - 1, side), None).level_shapes[-1] == (1, 2)


def test_export_checks_a_second_size_the_predictor_makes():
    """Besides the traced square, export checks the size a 3:2 landscape photo becomes in predict (128 x 192)."""
    model = DINODetector(3, **SMALL).eval()
    ((check,),) = model.export_check_inputs()
    (example,) = model.example_inputs()
    assert check.shape == predict_input(300, 200, model).shape == (1, 3, 128, 192)
    assert check.shape[-2:] != example.shape[-2:]


@pytest.mark.parametrize(
    "detector",
    [
        # the default 2-layer cascade (1.0, 1.0 - 0.8): its K_1 sits on a float32 rounding edge at 170 x 128
        pytest.param(lambda: FocusDETR(3, **SMALL, num_attn_tokens=16), id="focus_detr"),
        pytest.param(lambda: RelationDETR(3, **SMALL), id="relation_detr", marks=pytest.mark.slow),
    ],
)
def test_onnx_graph_runs_predict_sized_images_like_pytorch(tmp_path, detector):
    """ONNX (not the torch.export fallback), H and W named axes, checked at export on the traced square and the
    128 x 192 image; then a portrait 4:3 photo (a third size, 170 x 128) through the predictor's transform.
    Tolerance: the export's own fp32 graph-vs-eager check (ONNX_RTOL, ONNX_ATOL)."""
    torch.manual_seed(0)
    model = detector().eval()
    path = tmp_path / "model.onnx"
    info = export_onnx(model, model.example_inputs(), model.export_spec(), path, 18, model.export_check_inputs())
    assert info["checked_on"] == [[[2, 3, 128, 128]], [[1, 3, 128, 192]]]
    (graph_input,) = onnx.load(str(path)).graph.input
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["B", 3, "H", "W"]

    x = predict_input(120, 160, model)
    assert x.shape == (1, 3, 170, 128)
    if isinstance(model, FocusDETR):  # K = 118 // 2 + 1 = 60 kept tokens; 60 * 0.19999999999999996 is 11 in
        # float64 (eager) but 12 in float32, which a graph computing the counts from float32 sizes would use
        assert model.encoder.kept_counts(model.tokens(x, None)) == [60, 11]
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x.numpy()})
    with torch.no_grad():
        want = model(x)
    assert got[0].shape == (1, 20, 3) and got[1].shape == (1, 20, 4)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w.numpy(), rtol=ONNX_RTOL, atol=ONNX_ATOL)

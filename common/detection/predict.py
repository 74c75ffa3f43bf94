"""Detect objects in a user's image with an exported DETR (the `predictor` of configs/detection/coco.yaml).

The image (png, jpg, bmp, tif, webp, ...; grey, 16-bit grey and RGBA become RGB: common/data/images.py) gets
the evaluation transform (shorter side resized to `eval_size`, longer side capped at `max_size`, ImageNet
normalisation; an image more than `max_size` times longer than wide, or the reverse, is refused), goes through
`model(images)` (the exported graph's signature: no padding mask for a single image), and the top
detections over queries x classes with score >= `score_threshold` are written:
- `predictions.json`: {"input", "image_size": [w, h], "detections": [{"bbox": [x, y, w, h] in the original
  image's pixels, "score", "label", "class"}]} (highest score first);
- `predictions.png`: the image with the boxes drawn.
The resize follows the export: `spec.preprocess` {eval_size, max_size} when the model's export_spec gives
it, else the model's `eval_size`/`max_size` attributes, else the side of its example input.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from common.data.images import open_image
from common.detection.plots import detections_from, draw_detections
from common.detection.postprocess import postprocess
from common.detection.transforms import apply, eval_transform, resize_shorter
from common.errors import InputError, check_range
from common.utils.figures import save_figure
from common.utils.files import write_json


def check_aspect_ratio(path: Path, image: Image.Image, eval_size: int, max_size: int) -> None:
    """InputError if the evaluation resize (shorter side to `eval_size`, longer side capped at `max_size`) would
    leave the image's shorter side under one pixel: torchvision cannot resize to that."""
    w, h = image.size
    cap = max(max_size, eval_size)  # as eval_transform
    if min(resize_shorter(h, w, eval_size, cap)) < 1:
        expected = f"an image whose longer side is at most {cap} times its shorter side"
        raise InputError(path, expected, problem=f"aspect ratio too extreme ({w} x {h} pixels)")


def _inner(spec: dict | None) -> dict:
    return (spec or {}).get("spec", spec) or {}


def preprocessing(model, spec: dict | None) -> tuple[int, int]:
    """(eval_size, max_size) the model was evaluated at (see the module docstring for the order of sources)."""
    pre = _inner(spec).get("preprocess") or {}
    eval_size = pre.get("eval_size") or getattr(model, "eval_size", None)
    max_size = pre.get("max_size") or getattr(model, "max_size", None)
    if eval_size is None:
        eval_size = min(model.example_inputs()[0].shape[-2:])
    return int(eval_size), int(max_size or round(eval_size * 1333 / 800))  # DETR's aspect cap when unknown


def class_names_of(model, spec: dict | None) -> list[str]:
    inner = _inner(spec)
    names = inner.get("class_names") or inner.get("classes") or getattr(model, "class_names", None)
    if names:
        return [str(n) for n in names]
    return [str(i) for i in range(int(getattr(model, "num_classes", 0)))]


@torch.no_grad()
def predict(
    model, input_path: Path, out_dir: Path, spec: dict | None = None, score_threshold: float = 0.3, num_top: int = 100
) -> dict:
    """Detections in the image at `input_path`; writes predictions.json and predictions.png under `out_dir`."""
    check_range("score_threshold", score_threshold, 0.0, 1.0)
    input_path, out_dir = Path(input_path), Path(out_dir)
    image = open_image(input_path, "RGB")
    eval_size, max_size = preprocessing(model, spec)
    check_aspect_ratio(input_path, image, eval_size, max_size)
    x, target = apply(eval_transform(eval_size, max_size), image, torch.zeros(0, 4), torch.zeros(0), 0)
    model.eval()
    logits, boxes = model(x[None])
    result = postprocess(logits, boxes, target["orig_size"][None], num_top)[0]
    names = class_names_of(model, spec)
    detections = detections_from(result, names, score_threshold)
    rows = [
        {
            "bbox": [round(v, 2) for v in d["bbox"]],
            "score": round(d["score"], 4),
            "label": d["label"],
            "class": d["name"],
        }
        for d in detections
    ]
    print(f"\n{input_path.name}: {len(rows)} detections with score >= {score_threshold}")
    for r in rows[:20]:
        bx, by, bw, bh = r["bbox"]
        print(f"  {r['score']:.3f}  {r['class']:<12} x={bx:.0f} y={by:.0f} w={bw:.0f} h={bh:.0f}")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = write_json(
        out_dir / "predictions.json",
        {
            "input": str(input_path),
            "image_size": list(image.size),
            "score_threshold": score_threshold,
            "detections": rows,
        },
    )
    w, h = image.size
    fig, ax = plt.subplots(figsize=(max(4.0, 6.0 * w / max(w, h)), max(4.0, 6.0 * h / max(w, h))))
    draw_detections(
        ax, image, detections, title=f"{input_path.name}: {len(rows)} detections (score >= {score_threshold})"
    )
    png = save_figure(fig, out_dir / "predictions.png")
    return {"predictions": json_path, "picture": png}

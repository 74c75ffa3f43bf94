"""Classify a user's image with an exported vision model (the `predictor` of configs/vision/classification.yaml).

The image (png, jpg, bmp, webp, ...; opened by common/data/images.py, so 16-bit grey is scaled to 8 bits and
oversized files are refused) is converted to grey or RGB as the model expects, resized to the
model's square input (bilinear; no crop, so the whole picture is seen) and normalised as in training.
Printed and written: the top-5 classes with probabilities (`prediction.json`) and `prediction.png`
(the model's view of the image beside its top-5 bar chart). Class names come from the export
(`export.json` spec.classes, else the model's own).
Fashion-MNIST models expect a light object on a black background, centred, like the training images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common.data.images import open_image
from common.vision.plots import topk_figure
from common.vision.transforms import normalize


def load_image(path: Path, in_chans: int, img_size: int) -> torch.Tensor:
    """The file as the model's input [1, in_chans, img_size, img_size] float32; InputError if unreadable."""
    image = open_image(path, "L" if in_chans == 1 else "RGB").resize((img_size, img_size), Image.BILINEAR)
    array = np.array(image, dtype=np.uint8)
    array = array[..., None] if array.ndim == 2 else array
    return normalize(torch.from_numpy(array).permute(2, 0, 1))[None]


def _spec_value(model, spec: dict | None, key: str, default):
    inner = (spec or {}).get("spec", spec) or {}
    return inner.get(key) or default


@torch.no_grad()
def predict(model, input_path: Path, out_dir: Path, spec: dict | None = None, k: int = 5) -> dict:
    """Top-k classes of the image at `input_path`; writes prediction.json and prediction.png under `out_dir`."""
    input_path, out_dir = Path(input_path), Path(out_dir)
    names = _spec_value(model, spec, "classes", getattr(model, "class_names", None))
    image = load_image(input_path, int(model.in_chans), int(model.img_size))
    model.eval()
    probs = model(image).softmax(-1)[0]
    top = probs.topk(min(k, len(probs)))
    rows = [
        {"class": names[i], "index": i, "probability": round(p, 6)}
        for p, i in zip(top.values.tolist(), top.indices.tolist())
    ]
    print(f"\n{input_path.name}: top-{len(rows)}")
    for r in rows:
        print(f"  {r['probability']:.4f}  {r['class']}")
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "prediction.json"
    json_path.write_text(json.dumps({"input": str(input_path), "top": rows}, indent=2, allow_nan=False) + "\n")
    png = topk_figure(
        image[0], [r["class"] for r in rows], [r["probability"] for r in rows],
        f"{input_path.name}: {rows[0]['class']} ({rows[0]['probability']:.2f})", out_dir / "prediction.png",
    )  # fmt: skip
    return {"prediction": json_path, "picture": png}

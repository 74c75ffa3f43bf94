"""`make predict app=risurconv input=<cloud or mesh>`: the top-5 classes (or, for part segmentation, the parts of
each point) and a picture.

The file is read with open3d (common.pointcloud.io: meshes sampled with face normals, clouds without normals
get estimated ones), reduced to the model's point count by farthest point sampling (fewer points are repeated,
as the official point dropout does), normalised to the unit sphere and classified. A part-segmentation model
needs the object's category: it segments under every category and keeps the one its own per-point confidence
favours; each input point takes the parts of its nearest sampled points (kNN interpolation of probabilities).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from common.errors import InputError
from common.pointcloud.io import EXPECTED, read_cloud
from common.pointcloud.ops import farthest_point_sample, gather_points, knn_interpolate
from common.pointcloud.plots import cloud_grid
from common.pointcloud.transforms import normalize_unit_sphere
from common.utils.files import write_json

MIN_FRACTION = 4  # at least num_points / 4 distinct input points


def prepare(xyz: np.ndarray, normals: np.ndarray, n: int, path: Path) -> tuple[torch.Tensor, np.ndarray]:
    """The model input [1, n, 6] and the normalised input xyz [M, 3]."""
    if len(xyz) < max(n // MIN_FRACTION, 16):
        raise InputError(path, EXPECTED, problem=f"{len(xyz)} points; the model needs at least {n // MIN_FRACTION}")
    unit = normalize_unit_sphere(xyz)
    cloud = torch.from_numpy(np.concatenate([unit, normals], 1)).float()[None]
    if len(xyz) >= n:
        cloud = gather_points(cloud, farthest_point_sample(cloud[..., :3], n))
    else:
        cloud = cloud[:, torch.arange(n) % len(xyz)]
    return cloud, unit


@torch.no_grad()
def predict(model, input_path: Path, out_dir: Path, spec: dict) -> dict:
    input_path, out_dir = Path(input_path), Path(out_dir)
    xyz, normals = read_cloud(input_path)
    n = spec["spec"]["inputs"]["points"]["shape"][1]
    cloud, unit = prepare(xyz, normals, n, input_path)
    names = model.class_names
    if getattr(model, "task", "cls") == "cls":
        probs = model(cloud).softmax(-1)[0]
        top = probs.topk(min(5, len(names)))
        result = {"top5": [{"class": names[i], "prob": round(float(p), 4)} for p, i in zip(top.values, top.indices)]}
        title = f"{names[int(top.indices[0])]} ({float(top.values[0]):.2f})"
        picture = cloud_grid([cloud[0, :, :3].numpy()], [title], out_dir / "prediction.png")
    else:
        scores, labels = [], []
        for c, parts in enumerate(model.category_parts):
            onehot = torch.nn.functional.one_hot(torch.tensor([c]), len(names)).float()
            probs = model(cloud, onehot).softmax(-1)[0][:, parts]
            probs = probs / probs.sum(-1, keepdim=True)
            scores.append(float(probs.max(-1).values.mean()))
            full = knn_interpolate(torch.from_numpy(unit).float()[None], cloud[..., :3], probs[None])[0]
            labels.append(np.asarray(parts)[full.argmax(-1).numpy()])
        order = np.argsort(scores)[::-1][:5]
        best = int(order[0])
        result = {
            "top5": [{"category": names[i], "confidence": round(scores[i], 4)} for i in order],
            "parts": labels[best].tolist(),
        }
        picture = cloud_grid([unit], [f"{names[best]}: parts"], out_dir / "prediction.png", values=[labels[best]],
                             cmap="tab20")  # fmt: skip
    result["input"], result["points_read"] = str(input_path), len(xyz)
    write_json(out_dir / "prediction.json", result)
    print(json.dumps(result["top5"], indent=1))
    return {"prediction": out_dir / "prediction.json", "picture": picture}

"""The predictor on a model in memory: top-5 classes and a picture for a classifier; parts for every input point
for a part segmenter; named InputErrors for degenerate files."""

from __future__ import annotations

import json

import numpy as np
import open3d as o3d
import pytest

from apps.risurconv.model import create
from apps.risurconv.predict import predict
from common.errors import InputError

SMALL = {"npoints": [32, 16, 8, 4], "ks": [8, 8, 8, 4]}


def spec(n):
    return {"spec": {"inputs": {"points": {"shape": ["B", n, 6]}}}}


def write_box(path):
    mesh = o3d.geometry.TriangleMesh.create_box(1, 2, 3)
    assert o3d.io.write_triangle_mesh(str(path), mesh)


def test_classifier_top5_and_picture(tmp_path):
    model = create(6, num_points=64, class_names=list("abcdef"), risurconv={**SMALL, "widths": [8, 8, 16, 16, 16],
                   "transformer_heads": 2}).eval()  # fmt: skip
    write_box(tmp_path / "box.off")
    written = predict(model, tmp_path / "box.off", tmp_path / "out", spec(64))
    result = json.loads(written["prediction"].read_text())
    probs = [r["prob"] for r in result["top5"]]
    assert (
        len(probs) == 5
        and probs == sorted(probs, reverse=True)
        and {r["class"] for r in result["top5"]} <= set("abcdef")
    )
    assert written["picture"].is_file()


def test_part_segmenter_labels_every_input_point_with_its_categorys_parts(tmp_path):
    parts = [[0, 1], [2, 3, 4]]
    model = create(
        5,
        task="partseg",
        num_categories=2,
        num_points=64,
        class_names=["mug", "table"],
        category_parts=parts,
        risurconv_partseg={**SMALL, "widths": [8, 8, 16, 16], "fp_ks": [8, 8, 8, 4]},
    )
    xyz = np.random.default_rng(0).normal(size=(300, 3))
    np.savetxt(tmp_path / "c.xyz", xyz)  # no normals: estimated
    written = predict(model.eval(), tmp_path / "c.xyz", tmp_path / "out", spec(64))
    result = json.loads(written["prediction"].read_text())
    best = ["mug", "table"].index(result["top5"][0]["category"])
    assert len(result["parts"]) == 300 and set(result["parts"]) <= set(parts[best])


def test_too_few_points_is_an_input_error(tmp_path):
    model = create(3, num_points=256, risurconv={"npoints": [64, 32, 16, 8], "ks": [8, 8, 8, 8]}).eval()
    np.savetxt(tmp_path / "few.xyz", np.random.default_rng(0).normal(size=(40, 3)))
    with pytest.raises(InputError, match="40 points"):
        predict(model, tmp_path / "few.xyz", tmp_path / "out", spec(256))

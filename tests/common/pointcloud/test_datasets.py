"""The real layouts, on small files written here: ModelNet40 normal_resampled text, ScanObjectNN h5,
ShapeNetPart normal text; malformed or missing pieces raise DatasetError naming the file and the card."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from common.errors import DatasetError
from common.pointcloud.datasets import SHAPENETPART_PARTS, read_modelnet, read_scanobjectnn, read_shapenetpart


def rows(rng, n, extra=None):
    xyz = rng.normal(size=(n, 3)) * [1, 2, 3] + 5
    normals = rng.normal(size=(n, 3))
    cols = [xyz, normals] if extra is None else [xyz, normals, extra[:, None]]
    return np.concatenate(cols, 1)


def modelnet(root, rng):
    names = ["airplane", "bathtub"]
    (root / "modelnet40_shape_names.txt").write_text("\n".join(names + ["zzz"]) + "\n")
    ids = {"train": ["airplane_0001", "bathtub_0001", "bathtub_0002"], "test": ["airplane_0002"]}
    for split, shape_ids in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(shape_ids) + "\n")
        for shape_id in shape_ids:
            folder = root / shape_id.rsplit("_", 1)[0]
            folder.mkdir(exist_ok=True)
            np.savetxt(folder / f"{shape_id}.txt", rows(rng, 300), delimiter=",", fmt="%.6f")


def test_modelnet_reads_normalises_and_samples(tmp_path):
    modelnet(tmp_path, np.random.default_rng(0))
    for sampling in ("fps", "first"):
        points, label, names = read_modelnet(tmp_path, "train", 64, sampling=sampling)
        assert points.shape == (3, 64, 6) and label.tolist() == [0, 1, 1] and names[:2] == ["airplane", "bathtub"]
        np.testing.assert_allclose(np.linalg.norm(points[..., :3], axis=-1).max(1), 1.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(points[..., 3:], axis=-1), 1.0, atol=1e-5)
    first, _, _ = read_modelnet(tmp_path, "train", 64, sampling="first")
    raw = np.loadtxt(tmp_path / "airplane" / "airplane_0001.txt", delimiter=",")[:64, :3]
    centred = raw - raw.mean(0)
    np.testing.assert_allclose(first[0, :, :3], centred / np.linalg.norm(centred, axis=1).max(), atol=1e-5)


def test_modelnet_errors_name_file_and_card(tmp_path):
    with pytest.raises(DatasetError) as err:
        read_modelnet(tmp_path, "train", 64)
    assert "modelnet40_shape_names.txt" in str(err.value) and "data_cards/modelnet40.md" in str(err.value)
    modelnet(tmp_path, np.random.default_rng(0))
    (tmp_path / "bathtub" / "bathtub_0002.txt").write_text("1,2,3\n4,5,6\n")
    with pytest.raises(DatasetError, match="bathtub_0002.txt"):
        read_modelnet(tmp_path, "train", 64)


def test_scanobjectnn_h5_with_estimated_normals(tmp_path):
    folder = tmp_path / "main_split"
    folder.mkdir()
    rng = np.random.default_rng(1)
    sphere = rng.normal(size=(3, 256, 3))
    sphere /= np.linalg.norm(sphere, axis=-1, keepdims=True)
    with h5py.File(folder / "training_objectdataset_augmentedrot_scale75.h5", "w") as f:
        f["data"], f["label"] = sphere.astype(np.float32), np.array([2, 0, 14])
    points, label = read_scanobjectnn(tmp_path, "train", 128)
    assert points.shape == (3, 128, 6) and label.tolist() == [2, 0, 14]
    assert np.median((points[..., :3] * points[..., 3:]).sum(-1)) > 0.9  # estimated normals point outward
    with pytest.raises(DatasetError, match="test_objectdataset_augmentedrot_scale75.h5"):
        read_scanobjectnn(tmp_path, "test", 128)


def test_shapenetpart_reads_parts_and_categories(tmp_path):
    rng = np.random.default_rng(2)
    synsets = {name: f"{i:08d}" for i, name in enumerate(SHAPENETPART_PARTS)}
    (tmp_path / "synsetoffset2category.txt").write_text("".join(f"{n}\t{s}\n" for n, s in synsets.items()))
    (tmp_path / "train_test_split").mkdir()
    entries = []
    for name in ("Mug", "Airplane"):
        folder = tmp_path / synsets[name]
        folder.mkdir()
        parts = rng.choice(SHAPENETPART_PARTS[name], 90).astype(float)
        np.savetxt(folder / "abc.txt", rows(rng, 90, parts), fmt="%.6f")
        entries.append(f"shape_data/{synsets[name]}/abc")
    (tmp_path / "train_test_split" / "shuffled_train_file_list.json").write_text(json.dumps(entries))
    points, category, parts, names = read_shapenetpart(tmp_path, "train", 128)
    assert points.shape == (2, 128, 6) and parts.shape == (2, 128)
    assert [names[c] for c in category] == ["Mug", "Airplane"]
    assert set(parts[0]) <= set(SHAPENETPART_PARTS["Mug"]) and set(parts[1]) <= set(SHAPENETPART_PARTS["Airplane"])
    with pytest.raises(DatasetError, match="shuffled_test_file_list.json"):
        read_shapenetpart(tmp_path, "test", 128)

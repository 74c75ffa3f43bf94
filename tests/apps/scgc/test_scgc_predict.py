"""predict(): a node-feature file in, predictions.csv and tsne.png out; bad files raise InputError."""

import numpy as np
import pandas as pd
import pytest
import torch

from apps.scgc.model import SCGC
from apps.scgc.predict import predict
from common.errors import InputError


@pytest.fixture
def model():
    torch.manual_seed(0)
    return SCGC(5, 3, hidden=(16, 16, 32), n_z=4).eval()


@pytest.fixture
def spec(model):
    return {"app": "scgc", "spec": model.export_spec()}  # as export.json


def test_csv_with_node_column(tmp_path, model, spec):
    rng = np.random.default_rng(0)
    x = rng.random((12, 5)).astype(np.float32)
    frame = pd.DataFrame(x, columns=list("abcde"))
    frame.insert(0, "node", [f"n{i}" for i in range(12)])
    frame.to_csv(tmp_path / "nodes.csv", index=False)
    out = predict(model, tmp_path / "nodes.csv", tmp_path / "out", spec)
    assert set(out) == {"predictions", "tsne"} and out["tsne"].stat().st_size > 1000
    pred = pd.read_csv(out["predictions"])
    assert list(pred.columns) == ["node", "cluster", "confidence"] and pred["node"].tolist()[0] == "n0"
    q, _ = model(torch.from_numpy(x))
    assert pred["cluster"].tolist() == q.argmax(1).tolist()
    np.testing.assert_allclose(pred["confidence"], q.max(1).values.detach().numpy(), atol=1e-6)


def test_whitespace_txt_small_input_uses_pca(tmp_path, model, spec):
    np.savetxt(tmp_path / "nodes.txt", np.random.default_rng(1).random((4, 5)))
    out = predict(model, tmp_path / "nodes.txt", tmp_path / "out", spec)
    assert len(pd.read_csv(out["predictions"])) == 4 and out["tsne"].is_file()


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("wide.csv", "a,b,c\n1,2,3\n", "3 feature columns, the model expects 5"),
        ("text.csv", "a,b,c,d,e\n1,2,x,4,5\n", "non-numeric"),
        ("ragged.txt", "1 2 3 4 5\n1 2 3\n", "cannot parse"),
        ("empty.csv", "a,b,c,d,e\n", "no rows"),
        ("nan.csv", "a,b,c,d,e\n1,2,,4,5\n", "nan"),
        ("huge.txt", "1 2 1e308 4 5\n", "beyond float32"),  # finite in float64, inf in the model's float32
        ("large.csv", "a,b,c,d,e\n1,2,1e30,4,5\n", "non-finite output"),  # float32, but the clustering overflows
        ("model.pkl", "x", "unsupported file type"),
    ],
)
def test_bad_files_raise_input_error(tmp_path, model, spec, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError) as err:
        predict(model, tmp_path / name, tmp_path / "out", spec)
    assert words in str(err.value) and err.value.path.name == name


def test_missing_file(tmp_path, model, spec):
    with pytest.raises(InputError):
        predict(model, tmp_path / "absent.csv", tmp_path / "out", spec)

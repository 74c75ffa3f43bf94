"""SCGC data: embedded Cora and digits_knn, the SDCN text format, batching, and error messages."""

import json

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestNeighbors

from apps.scgc import data as scgc_data
from apps.scgc.data import SCGCDataModule, build_cora, knn_edges, load_sdcn
from common.data.cards import load_card
from common.errors import ConfigError, DatasetError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("scgc_data")


def test_every_dataset_has_a_valid_card():
    for card in set(SCGCDataModule.DATASETS.values()):
        assert load_card(card).fields["used_by"]


def test_cora(data_dir):
    dm = SCGCDataModule(dataset="cora", data_dir=str(data_dir))
    dm.prepare_data()
    dm.setup("fit")
    g = dm.graph
    assert g.x.shape == (2708, 1433) and g.x.dtype == torch.float32
    assert set(torch.unique(g.x).tolist()) == {0.0, 1.0}
    assert g.y.shape == (2708,) and torch.unique(g.y).tolist() == list(range(7))
    # 5429 directed citation rows, 151 of them reciprocal: 5278 undirected edges, stored both ways
    assert dm.info["raw_edges"] == 5429 and dm.info["undirected_edges"] == 5278
    assert g.edge_index.shape == (2, 10556)
    assert g.is_undirected() and not g.has_self_loops()
    assert dm.model_kwargs() == {"in_dim": 1433, "n_clusters": 7}
    assert dm.dataset_name == "cora" and dm.DATASETS["cora"] == "cora"
    assert (data_dir / "cora_v1" / ".complete").is_file()


def test_cora_missing_files_raise_dataset_error(tmp_path, monkeypatch):
    monkeypatch.setattr(scgc_data, "cora_resource_dir", lambda: tmp_path / "nowhere")
    with pytest.raises(DatasetError) as err:
        build_cora(tmp_path)
    assert err.value.card == "cora" and "cora_nodes.parquet.gzip" in str(err.value.path)


def test_cora_malformed_file_raises_dataset_error(tmp_path, monkeypatch):
    (tmp_path / "cora_nodes.parquet.gzip").write_text("not parquet")
    (tmp_path / "cora_rels.parquet.gzip").write_text("not parquet")
    monkeypatch.setattr(scgc_data, "cora_resource_dir", lambda: tmp_path)
    with pytest.raises(DatasetError) as err:
        build_cora(tmp_path / "out")
    assert err.value.card == "cora" and err.value.path.name == "cora_nodes.parquet.gzip"


def test_digits_knn(data_dir):
    dm = SCGCDataModule(dataset="digits_knn", data_dir=str(data_dir))
    dm.prepare_data()
    dm.setup()
    g = dm.graph
    assert g.x.shape == (1797, 64) and float(g.x.min()) >= 0 and float(g.x.max()) <= 1
    assert dm.model_kwargs() == {"in_dim": 64, "n_clusters": 10}
    assert dm.info["knn_k"] == 3 and dm.info["knn_metric"] == "heat"
    assert g.is_undirected() and not g.has_self_loops()
    # every node is joined to its 3 nearest other nodes (Euclidean = heat-kernel ranking)
    x = g.x.double().numpy()
    _, nn = NearestNeighbors(n_neighbors=4).fit(x).kneighbors(x)
    edges = set(zip(*g.edge_index.tolist()))
    missing = sum((i, j) not in edges for i in range(len(x)) for j in nn[i, 1:] if j != i)
    assert missing <= 5  # only exact distance ties may pick another neighbour
    degree = torch.bincount(g.edge_index[0], minlength=1797)
    assert int(degree.min()) >= 3


def test_knn_edges_ncos_and_heat():
    x = np.array([[1.0, 0, 0], [0.9, 0, 0], [0, 1.0, 0], [0, 0.8, 0.1]])
    heat = knn_edges(x, 1, "heat")
    assert heat[1].tolist() == [1, 0, 3, 2]
    ncos = knn_edges(x, 1, "ncos")
    assert ncos[1][:2].tolist() == [1, 0]


# ---- SDCN text format ----------------------------------------------------------------------------
def write_sdcn(root, name="toy", n=12, graph=True, layout="flat"):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], n // 2)
    x = rng.normal(size=(n, 3)) + 4 * y[:, None]
    folder = root / "data" if layout == "sdcn" else root
    folder.mkdir(parents=True, exist_ok=True)
    np.savetxt(folder / f"{name}.txt", x)
    np.savetxt(folder / f"{name}_label.txt", y, fmt="%d")
    edges = np.array([[i, i + 1] for i in range(n - 1) if i != n // 2 - 1])
    if graph:
        gdir = root / "graph" if layout == "sdcn" else root
        gdir.mkdir(parents=True, exist_ok=True)
        gname = f"{name}2_graph.txt" if layout == "sdcn" else f"{name}_graph.txt"
        np.savetxt(gdir / gname, edges, fmt="%d")
    return x, y, edges


def test_sdcn_with_graph_file(tmp_path):
    x, y, edges = write_sdcn(tmp_path)
    data, info = load_sdcn(tmp_path, "toy")
    np.testing.assert_allclose(data.x.numpy(), x, rtol=1e-6)
    assert data.y.tolist() == y.tolist()
    assert data.edge_index.shape[1] == 2 * len(edges) and data.is_undirected()
    assert info["graph_file"].endswith("toy_graph.txt")


def test_sdcn_without_graph_builds_knn(tmp_path):
    write_sdcn(tmp_path, graph=False)
    data, info = load_sdcn(tmp_path, "toy", knn_k=2)
    assert info == {"graph_file": None, "knn_k": 2, "knn_metric": "heat"}
    assert data.is_undirected() and int(torch.bincount(data.edge_index[0]).min()) >= 2
    same = (data.y[data.edge_index[0]] == data.y[data.edge_index[1]]).float().mean()
    assert same == 1.0  # the two blobs are far apart


def test_sdcn_download_layout(tmp_path):
    write_sdcn(tmp_path, layout="sdcn")
    data, info = load_sdcn(tmp_path, "toy", knn_k=2)
    assert info["graph_file"].endswith("graph/toy2_graph.txt") and data.num_nodes == 12


def test_sdcn_datamodule(tmp_path):
    write_sdcn(tmp_path, name="usps")
    dm = SCGCDataModule(dataset="usps", source="real", root=str(tmp_path), data_dir=str(tmp_path / "cache"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.model_kwargs() == {"in_dim": 3, "n_clusters": 2}
    assert dm.card == "sdcn" and dm.dataset_name == "usps"


@pytest.mark.parametrize(
    "corrupt, bad_file, words",
    [
        (lambda r: (r / "toy_label.txt").write_text("0\n1\n"), "toy_label.txt", "2 labels for 12 feature lines"),
        (lambda r: (r / "toy.txt").write_text("1 2 3\n4 x 6\n"), "toy.txt", "malformed"),
        (lambda r: (r / "toy.txt").write_text("1 2 3\n4 5\n"), "toy.txt", "malformed"),
        (lambda r: (r / "toy_graph.txt").write_text("0 1\n3 99\n"), "toy_graph.txt", "out of range"),
        (lambda r: (r / "toy_graph.txt").write_text("0 1 2\n"), "toy_graph.txt", "2 integers"),
        (lambda r: (r / "toy_label.txt").write_text("0.5\n" * 12), "toy_label.txt", "not integers"),
        (lambda r: (r / "toy_label.txt").unlink(), "toy_label.txt", "not found"),
        (lambda r: (r / "toy.txt").write_text(""), "toy.txt", "empty"),
        (lambda r: (r / "toy.txt").write_text("1 2 3\n" * 11 + "1 1e308 3\n"), "toy.txt", "beyond float32"),
    ],
)
def test_malformed_sdcn_files_name_the_file_and_card(tmp_path, corrupt, bad_file, words):
    write_sdcn(tmp_path)
    corrupt(tmp_path)
    with pytest.raises(DatasetError) as err:
        load_sdcn(tmp_path, "toy")
    assert err.value.path.name == bad_file and err.value.card == "sdcn"
    assert words in str(err.value) and "data_cards/sdcn.md" in str(err.value)


def test_missing_root_raises_dataset_error(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_sdcn(tmp_path / "absent", "usps")
    assert err.value.card == "sdcn"


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"source": "web"}, "source"),
        ({"dataset": "pubmed"}, "dataset"),
        ({"source": "real", "dataset": "usps"}, "root"),
        ({"source": "real", "dataset": "cora", "root": "x"}, "dataset"),
        ({"batch_size": 1}, "batch_size"),
        ({"knn_k": 0}, "knn_k"),
        ({"knn_metric": "cosine"}, "knn_metric"),
    ],
)
def test_bad_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError) as err:
        SCGCDataModule(**kwargs)
    assert err.value.key == key


# ---- batching ------------------------------------------------------------------------------------
def test_full_batch_and_seeded_mini_batches(data_dir):
    dm = SCGCDataModule(dataset="digits_knn", data_dir=str(data_dir))
    dm.setup()
    (batch,) = list(dm.train_dataloader())
    assert batch["idx"].tolist() == list(range(1797)) and batch["x"].shape == (1797, 64)
    (val,) = list(dm.val_dataloader())
    assert val["idx"].tolist() == list(range(1797))

    mb = SCGCDataModule(dataset="digits_knn", data_dir=str(data_dir), batch_size=500, seed=3)
    mb.setup()
    loader = mb.train_dataloader()
    epoch0 = [b["idx"] for b in loader]
    assert [len(i) for i in epoch0] == [500, 500, 500, 297]
    assert sorted(torch.cat(epoch0).tolist()) == list(range(1797))
    assert torch.equal(epoch0[1], [b["idx"] for b in loader][1])  # same epoch, same batches
    loader.sampler.set_epoch(1)
    epoch1 = [b["idx"] for b in loader]
    assert not torch.equal(epoch0[0], epoch1[0])
    b = epoch1[0]
    assert torch.equal(next(iter(loader))["x"], mb.graph.x[b])
    # a fresh loader (a resumed run) at epoch 1 yields the same batches
    again = mb.train_dataloader()
    again.sampler.set_epoch(1)
    assert all(torch.equal(a["idx"], e) for a, e in zip(again, epoch1, strict=True))


def test_meta_is_json(data_dir):
    SCGCDataModule(dataset="digits_knn", data_dir=str(data_dir)).prepare_data()
    meta = json.loads((data_dir / "digits_knn_v1" / "meta.json").read_text())
    assert meta["nodes"] == 1797 and meta["classes"] == 10 and meta["undirected_edges"] == 3884

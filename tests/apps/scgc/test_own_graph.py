"""A user's own graph under a name of its own (issue 20): `data.dataset=<name>` reads any graph in the SDCN
layout; a wrong layout names the missing files; names that are not a plain file stem are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from apps.scgc.data import SCGCDataModule
from common.errors import ConfigError, DatasetError
from tests.apps.scgc.test_scgc_data import write_sdcn


def datamodule(root, name: str) -> SCGCDataModule:
    return SCGCDataModule(dataset=name, source="real", root=str(root), data_dir=str(root / "cache"), knn_k=2)


@pytest.mark.parametrize("layout", ["flat", "sdcn"])
def test_a_graph_of_any_name_in_the_documented_layout(tmp_path, layout):
    x, y, edges = write_sdcn(tmp_path, name="my-lab.graph_2024", layout=layout)
    dm = datamodule(tmp_path, "my-lab.graph_2024")
    dm.prepare_data()
    dm.setup("fit")
    assert dm.dataset_name == "my-lab.graph_2024" and dm.card == "sdcn"
    assert dm.model_kwargs() == {"in_dim": 3, "n_clusters": 2}
    np.testing.assert_allclose(dm.graph.x.numpy(), x, rtol=1e-6)  # the file's rows, in order
    assert torch.equal(dm.graph.y, torch.from_numpy(y))
    assert dm.graph.edge_index.shape[1] == 2 * len(edges)  # its own graph file, both directions


def test_missing_files_are_named_with_the_graphs_found(tmp_path):
    write_sdcn(tmp_path, name="usps")
    with pytest.raises(DatasetError) as err:
        datamodule(tmp_path, "mygraph").setup("fit")
    text = str(err.value)
    assert err.value.path == tmp_path / "mygraph.txt" and err.value.card == "sdcn"
    assert "graph 'mygraph' not found: no mygraph.txt and no mygraph_label.txt" in text
    assert "(graphs there: usps)" in text and "data_cards/sdcn.md" in text


def test_missing_labels_alone_are_named(tmp_path):
    write_sdcn(tmp_path, name="mygraph", layout="sdcn")
    (tmp_path / "data" / "mygraph_label.txt").unlink()
    with pytest.raises(DatasetError, match="not found: no mygraph_label.txt in") as err:
        datamodule(tmp_path, "mygraph").setup("fit")
    assert err.value.path == tmp_path / "data" / "mygraph_label.txt"  # beside the features it found


@pytest.mark.parametrize("name", ["../mygraph", "sub/mygraph", "", "..", "cora", "digits_knn", 2024, None])
def test_names_that_are_not_a_file_stem_are_refused(tmp_path, name):
    with pytest.raises(ConfigError) as err:
        datamodule(tmp_path, name)
    assert err.value.key == "dataset" and "data_cards/sdcn.md" in str(err.value)

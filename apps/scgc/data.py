"""Graphs for SCGC: the embedded Cora and digits-kNN graphs, and the SDCN benchmark files (real data).

Every dataset is one graph, a `torch_geometric.data.Data(x, edge_index, y)` with float32 features,
an undirected edge_index (both directions stored, no self-loops) and int64 labels (used only for
evaluation: clustering never sees them).

Batches are dicts of tensors: `{"x": [B, d] float32, "y": [B] int64, "idx": [B] int64}` where `idx`
are the node ids (rows of the graph) in the batch; the module takes the contrastive target's
sub-block `target[idx][:, idx]` from `contrastive_target(order, influence)`.

- train: one batch holding all nodes in order (`batch_size=None`, full batch, the paper's setting) or
  node mini-batches of `batch_size` from a permutation seeded with `seed + epoch` (so a resumed run
  sees the same batches as an uninterrupted one; Lightning calls the sampler's `set_epoch`). Under DDP
  the mini-batches are dealt out to the ranks; the full batch goes to every rank.
- val, test: one batch with all nodes (clustering is evaluated on every node, the standard protocol).

kNN graphs follow SDCN's `calcu_graph.py`: "heat" ranks neighbours by the heat kernel
exp(-||x_i - x_j||²/2), i.e. by Euclidean distance (SDCN's choice for USPS and HHAR; also used for
digits_knn); "ncos" binarises the features, L1-normalises the rows and ranks by dot product (SDCN's
choice for Reuters). Each node is joined to its k nearest other nodes; the graph is then symmetrised.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from torch_geometric.data import Data

from apps.scgc.losses import adjacency_target
from common.data.cache import build_once
from common.data.cards import DataCardMixin
from common.errors import ConfigError, DatasetError, check_choice, check_range

EMBEDDED = ("cora", "digits_knn")
SDCN_NAMES = ("usps", "hhar", "reut", "acm", "dblp", "cite")
KNN_METRICS = ("heat", "ncos")
FORMAT_VERSION = 1
CORA_EXPECTED = (
    "graphdatascience 2.2's graphdatascience/resources/cora/cora_nodes.parquet.gzip (columns nodeId, "
    "subject, features: 2708 rows of 1433 binary features) and cora_rels.parquet.gzip (sourceNodeId, "
    "targetNodeId); install graphdatascience==2.2 (pip install --no-deps is enough)"
)


# ---- kNN graphs ----------------------------------------------------------------------------------
def knn_edges(x: np.ndarray, k: int, metric: str = "heat", chunk: int = 1024) -> np.ndarray:
    """Directed edges [2, N*k] from each node to its k nearest other nodes (ties: lower index first)."""
    check_choice("knn_metric", metric, KNN_METRICS)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"knn_k={k} needs 1 <= k < number of nodes ({n})")
    if metric == "ncos":
        f = (x > 0).astype(np.float64)
        f /= np.maximum(f.sum(axis=1, keepdims=True), 1.0)
    else:
        f = x
    sq = (f * f).sum(axis=1)
    cols = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        dot = f[rows] @ f.T
        # smaller score = nearer: squared Euclidean distance (heat kernel is monotone in it) or -similarity
        score = sq[rows, None] + sq[None, :] - 2.0 * dot if metric == "heat" else -dot
        score[np.arange(len(rows)), rows] = np.inf
        cols.append(np.argsort(score, axis=1, kind="stable")[:, :k])
    dst = np.concatenate(cols).ravel()
    src = np.repeat(np.arange(n), k)
    return np.stack([src, dst]).astype(np.int64)


def undirected(edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    """Both directions of every edge, self-loops and duplicates removed, sorted: [2, 2*E_undirected]."""
    ei = np.asarray(edge_index, dtype=np.int64)
    ei = ei[:, ei[0] != ei[1]]
    both = np.concatenate([ei, ei[::-1]], axis=1)
    key = np.unique(both[0] * num_nodes + both[1])
    return np.stack([key // num_nodes, key % num_nodes])


# ---- embedded builders ---------------------------------------------------------------------------
def cora_resource_dir() -> Path:
    """graphdatascience's bundled Cora folder, found without importing graphdatascience."""
    spec = importlib.util.find_spec("graphdatascience")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError("graphdatascience (python package)", CORA_EXPECTED, card="cora")
    return Path(list(spec.submodule_search_locations)[0]) / "resources" / "cora"


def build_cora(out: Path) -> None:
    import pandas as pd

    folder = cora_resource_dir()
    nodes_path, rels_path = folder / "cora_nodes.parquet.gzip", folder / "cora_rels.parquet.gzip"
    for path in (nodes_path, rels_path):
        if not path.is_file():
            raise DatasetError(path, CORA_EXPECTED, card="cora")
    try:
        nodes = pd.read_parquet(nodes_path, columns=["nodeId", "subject", "features"])
        x = np.stack(nodes["features"].to_numpy()).astype(np.uint8)
        y = nodes["subject"].to_numpy().astype(np.int64)
        node_ids = nodes["nodeId"].to_numpy().astype(np.int64)
    except Exception as e:  # noqa: BLE001 - any failure to read is a malformed file
        raise DatasetError(nodes_path, CORA_EXPECTED, card="cora", problem=f"cannot read Cora nodes ({e})") from e
    if x.shape != (2708, 1433) or not np.isin(x, (0, 1)).all() or len(np.unique(node_ids)) != len(node_ids):
        raise DatasetError(
            nodes_path, CORA_EXPECTED, card="cora", problem=f"unexpected Cora nodes (features {x.shape})"
        )
    try:
        rels = pd.read_parquet(rels_path, columns=["sourceNodeId", "targetNodeId"])
    except Exception as e:  # noqa: BLE001
        raise DatasetError(rels_path, CORA_EXPECTED, card="cora", problem=f"cannot read Cora edges ({e})") from e
    index = pd.Index(node_ids)
    src = index.get_indexer(rels["sourceNodeId"].to_numpy())
    dst = index.get_indexer(rels["targetNodeId"].to_numpy())
    if (src < 0).any() or (dst < 0).any():
        raise DatasetError(rels_path, CORA_EXPECTED, card="cora", problem="Cora edges name unknown node ids")
    edge_index = undirected(np.stack([src, dst]), len(node_ids))
    np.savez_compressed(out / "graph.npz", x=x, y=y, edge_index=edge_index, node_id=node_ids)
    meta = {
        "name": "cora",
        "nodes": len(y),
        "features": x.shape[1],
        "classes": int(len(np.unique(y))),
        "raw_edges": len(rels),
        "undirected_edges": edge_index.shape[1] // 2,
        "source": str(folder),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


def build_digits_knn(out: Path, k: int = 3) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)  # pixel counts 0..16 -> [0, 1], like USPS in SDCN
    y = digits.target.astype(np.int64)
    edge_index = undirected(knn_edges(x, k, "heat"), len(y))
    np.savez_compressed(out / "graph.npz", x=x, y=y, edge_index=edge_index, node_id=np.arange(len(y)))
    meta = {
        "name": "digits_knn",
        "nodes": len(y),
        "features": x.shape[1],
        "classes": 10,
        "knn_k": k,
        "knn_metric": "heat",
        "undirected_edges": edge_index.shape[1] // 2,
        "source": "sklearn.datasets.load_digits",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))


BUILDERS = {"cora": build_cora, "digits_knn": build_digits_knn}


def load_npz_graph(folder: Path, card: str) -> Data:
    path = folder / "graph.npz"
    expected = "graph.npz with arrays x [N, d], y [N], edge_index [2, E] (rebuilt by deleting the folder)"
    try:
        with np.load(path, allow_pickle=False) as f:
            x, y, ei = f["x"], f["y"], f["edge_index"]
    except FileNotFoundError:
        raise DatasetError(path, expected, card=card) from None
    except Exception as e:  # noqa: BLE001
        raise DatasetError(path, expected, card=card, problem=f"cannot read cached graph ({e})") from e
    if x.ndim != 2 or y.shape != (x.shape[0],) or ei.ndim != 2 or ei.shape[0] != 2:
        raise DatasetError(path, expected, card=card, problem="cached graph has inconsistent shapes")
    return Data(x=torch.from_numpy(x.astype(np.float32)), edge_index=torch.from_numpy(ei), y=torch.from_numpy(y))


# ---- SDCN benchmark files ------------------------------------------------------------------------
SDCN_EXPECTED = {
    "features": "<root>/<name>.txt: one node per line, whitespace-separated floats, same count on every line",
    "labels": "<root>/<name>_label.txt: one integer class per line, one line per node",
    "graph": "<root>/<name>_graph.txt (optional): one edge 'i j' per line, 0-based node ids < N",
}


def _first_existing(paths: list[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def load_sdcn(root: str | Path, name: str, knn_k: int = 3, knn_metric: str = "heat") -> tuple[Data, dict]:
    """Read `<root>/<name>.txt`, `<name>_label.txt` and, if present, `<name>_graph.txt` (SDCN format).

    The SDCN download layout (`data/<name>.txt`, `graph/<name><k>_graph.txt`) is accepted too. Without a
    graph file a kNN graph (`knn_k`, `knn_metric`) is built from the features.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, f"a folder holding {SDCN_EXPECTED['features']}", card="sdcn")
    feat_path = _first_existing([root / f"{name}.txt", root / "data" / f"{name}.txt"])
    folder = feat_path.parent if feat_path else root
    label_path = _first_existing([folder / f"{name}_label.txt", root / f"{name}_label.txt"])
    files = {f"{name}.txt": feat_path, f"{name}_label.txt": label_path}
    missing = [folder / file for file, path in files.items() if path is None]
    if missing:
        found = sorted(p.name[: -len("_label.txt")] for d in (root, root / "data") for p in d.glob("*_label.txt"))
        raise DatasetError(
            missing[0],
            f"{SDCN_EXPECTED['features']}; {SDCN_EXPECTED['labels']} (or both under <root>/data/)",
            card="sdcn",
            problem=f"graph {name!r} not found: no {' and no '.join(p.name for p in missing)} in {root}"
            + (f" (graphs there: {', '.join(found)})" if found else ""),
        )

    x = _loadtxt(feat_path, np.float64, SDCN_EXPECTED["features"], ndim=2)
    with np.errstate(over="ignore"):  # the model's float32: values beyond its range (3.4e38) would become inf
        finite = np.isfinite(x.astype(np.float32)).all()
    if not finite:
        problem = "features hold nan or inf (or values beyond float32's 3.4e38)"
        raise DatasetError(feat_path, SDCN_EXPECTED["features"], card="sdcn", problem=problem)
    y = _loadtxt(label_path, np.float64, SDCN_EXPECTED["labels"], ndim=1)
    if y.shape[0] != x.shape[0]:
        raise DatasetError(
            label_path,
            SDCN_EXPECTED["labels"],
            card="sdcn",
            problem=f"{y.shape[0]} labels for {x.shape[0]} feature lines in {feat_path.name}",
        )
    if not np.all(y == np.round(y)):
        raise DatasetError(label_path, SDCN_EXPECTED["labels"], card="sdcn", problem="labels are not integers")
    y = y.astype(np.int64)
    n = x.shape[0]

    graph_names = [f"{name}_graph.txt", f"{name}{knn_k}_graph.txt"]
    graph_path = _first_existing([d / g for g in graph_names for d in (root, root / "graph", feat_path.parent)])
    if graph_path is not None:
        edges = _loadtxt(graph_path, np.float64, SDCN_EXPECTED["graph"], ndim=2)
        if edges.shape[1] != 2 or not np.all(edges == np.round(edges)):
            raise DatasetError(
                graph_path,
                SDCN_EXPECTED["graph"],
                card="sdcn",
                problem=f"expected 2 integers per line, got {edges.shape[1]} columns",
            )
        edges = edges.astype(np.int64).T
        if edges.min() < 0 or edges.max() >= n:
            raise DatasetError(
                graph_path,
                SDCN_EXPECTED["graph"],
                card="sdcn",
                problem=f"edge node id out of range [0, {n}) (min {edges.min()}, max {edges.max()})",
            )
        graph = {"graph_file": str(graph_path)}
    else:
        if not 1 <= knn_k < n:
            raise DatasetError(feat_path, f"more than knn_k={knn_k} nodes", card="sdcn", problem="too few nodes")
        edges = knn_edges(x, knn_k, knn_metric)
        graph = {"graph_file": None, "knn_k": knn_k, "knn_metric": knn_metric}
    data = Data(
        x=torch.from_numpy(x.astype(np.float32)),
        edge_index=torch.from_numpy(undirected(edges, n)),
        y=torch.from_numpy(y),
    )
    return data, graph


def _loadtxt(path: Path, dtype, expected: str, ndim: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": reported below
            arr = np.loadtxt(path, dtype=dtype, ndmin=ndim)
    except ValueError as e:
        raise DatasetError(path, expected, card="sdcn", problem=f"malformed file ({e})") from e
    except OSError as e:
        raise DatasetError(path, expected, card="sdcn", problem=f"cannot read file ({e})") from e
    if arr.size == 0:
        raise DatasetError(path, expected, card="sdcn", problem="empty file")
    if arr.ndim != ndim:
        raise DatasetError(path, expected, card="sdcn", problem=f"expected {ndim} dimension(s), got {arr.ndim}")
    return arr


# ---- batching ------------------------------------------------------------------------------------
class NodeBatchSampler(Sampler):
    """Yields batches as lists of node ids: all nodes in order (batch_size None), or consecutive chunks of
    a permutation seeded with `seed + epoch` (`set_epoch`, called by Lightning at every epoch start)."""

    def __init__(self, num_nodes: int, batch_size: int | None = None, seed: int = 0, shuffle: bool = False):
        self.num_nodes, self.batch_size, self.seed, self.shuffle = num_nodes, batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.batch_size is None:
            return 1
        return -(-self.num_nodes // self.batch_size)

    def __iter__(self):
        if self.batch_size is None:
            yield list(range(self.num_nodes))
            return
        if self.shuffle:
            order = torch.randperm(self.num_nodes, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        else:
            order = torch.arange(self.num_nodes)
        yield from (chunk.tolist() for chunk in order.split(self.batch_size))


class GraphNodes(Dataset):
    """Nodes of one graph, indexed by whole batches: `dataset[list_of_node_ids]` is a batch dict."""

    def __init__(self, graph: Data):
        self.x, self.y = graph.x, graph.y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, indices) -> dict:
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        return {"x": self.x[idx], "y": self.y[idx], "idx": idx}


def _as_batch(batch: dict) -> dict:
    return batch


class SCGCDataModule(DataCardMixin, L.LightningDataModule):
    """One graph, node batches. See the module docstring for the batch format and samplers."""

    DATASETS = {"cora": "cora", "digits_knn": "digits_knn", **{name: "sdcn" for name in SDCN_NAMES}}

    def __init__(
        self,
        dataset: str = "cora",
        source: str = "embedded",
        root: str | None = None,
        data_dir: str = "data/scgc",
        batch_size: int | None = None,
        knn_k: int = 3,
        knn_metric: str = "heat",
        seed: int = 42,
    ):
        super().__init__()
        check_choice("source", source, ("embedded", "real"))
        if source == "embedded":
            check_choice("dataset", dataset, EMBEDDED)
        elif not isinstance(dataset, str) or Path(dataset).name != dataset or dataset in ("", ".", "..", *EMBEDDED):
            raise ConfigError(
                "dataset", dataset, "the name of a graph in data.root (the <name> of <name>.txt and <name>_label.txt, "
                f"e.g. one of {list(SDCN_NAMES)}; see data_cards/sdcn.md), not an embedded dataset's name",
            )  # fmt: skip
        if source == "real" and not root:
            raise ConfigError("root", root, "the folder holding the SDCN files (<name>.txt, <name>_label.txt)")
        if batch_size is not None:
            check_range("batch_size", batch_size, 2)
            batch_size = int(batch_size)
        check_range("knn_k", knn_k, 1)
        check_choice("knn_metric", knn_metric, KNN_METRICS)
        check_range("seed", seed)
        self.dataset, self.source, self.root = dataset, source, root
        self.data_dir, self.batch_size = Path(data_dir), batch_size
        self.knn_k, self.knn_metric, self.seed = int(knn_k), knn_metric, int(seed)
        self.graph: Data | None = None
        self.info: dict = {}
        self._targets: dict = {}

    @property
    def dataset_name(self) -> str:
        return self.dataset

    @property
    def card(self) -> str:
        return "sdcn" if self.source == "real" else self.DATASETS[self.dataset]  # a graph of any name: SDCN layout

    def _embedded_dir(self) -> Path:
        return build_once(self.data_dir / f"{self.dataset}_v{FORMAT_VERSION}", BUILDERS[self.dataset])

    def prepare_data(self) -> None:
        if self.source == "embedded":
            self._embedded_dir()

    def setup(self, stage: str | None = None) -> None:
        if self.graph is not None:
            return
        if self.source == "embedded":
            folder = self._embedded_dir()
            self.graph = load_npz_graph(folder, self.card)
            self.info = json.loads((folder / "meta.json").read_text())
        else:
            self.graph, self.info = load_sdcn(self.root, self.dataset, self.knn_k, self.knn_metric)

    @property
    def num_nodes(self) -> int:
        return self._graph().num_nodes

    def _graph(self) -> Data:
        if self.graph is None:
            raise RuntimeError("SCGCDataModule.setup() has not been called")
        return self.graph

    def model_kwargs(self) -> dict:
        g = self._graph()
        return {"in_dim": int(g.x.shape[1]), "n_clusters": int(torch.unique(g.y).numel())}

    def contrastive_target(self, order: int, influence: bool):
        """Sparse (scipy CSR) contrastive target Â^r or Â + ... + Â^r for this graph, cached."""
        key = (int(order), bool(influence))
        if key not in self._targets:
            g = self._graph()
            self._targets[key] = adjacency_target(g.edge_index, g.num_nodes, *key)
        return self._targets[key]

    def full_batch(self) -> dict:
        g = self._graph()
        return {"x": g.x, "y": g.y, "idx": torch.arange(g.num_nodes)}

    def _loader(self, batch_size: int | None, shuffle: bool) -> DataLoader:
        g = self._graph()
        sampler = NodeBatchSampler(g.num_nodes, batch_size, self.seed, shuffle)
        # The sampler's items are whole batches (lists of node ids) and batch_size=None turns off the loader's
        # own batching. Under DDP, Lightning wraps this sampler in a DistributedSamplerWrapper that deals the
        # batches out to the ranks (a full batch goes to every rank: same gradient, same result) and forwards
        # set_epoch, so the seeded per-epoch order survives both DDP and resuming.
        return DataLoader(GraphNodes(g), sampler=sampler, batch_size=None, collate_fn=_as_batch, num_workers=0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(None, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(None, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(None, shuffle=False)

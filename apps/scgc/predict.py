"""Cluster a user's node-feature file with a trained SCGC / SCGC* model.

SCGC's encoder is an MLP: the graph shaped the embedding only during training (through the contrastive
target), so inference needs node features alone, no edges. That is the paper's point (fast inference,
new nodes clustered without their neighbourhood).

Input: `.csv` with a header row (one node per row; an optional column named `node` or `id` is used
as the node name, every other column is a feature) or whitespace-separated `.txt` (one node per line,
the SDCN format). The number of feature columns must equal the model's `in_dim` (from `spec`).
Output under `out_dir`: `predictions.csv` (node, cluster, confidence = max_j q_ij) and `tsne.png`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from common.errors import InputError

ID_COLUMNS = ("node", "id")


def tsne_plot(z: np.ndarray, clusters: np.ndarray, path: Path, title: str, seed: int = 0, max_points: int = 5000):
    """Scatter of a 2-D t-SNE of `z` coloured by cluster (PCA for fewer than 10 points) -> `path`."""
    import matplotlib.pyplot as plt

    from common.utils.figures import save_figure

    z, clusters = np.asarray(z, dtype=np.float64), np.asarray(clusters)
    if len(z) > max_points:  # t-SNE is O(N log N) but slow on CPU: plot a seeded sample
        keep = np.sort(np.random.default_rng(seed).choice(len(z), max_points, replace=False))
        z, clusters = z[keep], clusters[keep]
    method = "t-SNE"
    if len(z) >= 10:
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, (len(z) - 1) / 3.0))
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="openmp"):  # see SCGCModule: OpenMP threads fight torch's
            xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
    else:
        method = "PCA"
        zc = z - z.mean(axis=0)
        _, _, vt = np.linalg.svd(zc, full_matrices=False)
        xy = zc @ vt[:2].T if vt.shape[0] >= 2 else np.pad(zc @ vt[:1].T, ((0, 0), (0, 1)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=clusters, cmap="tab10" if clusters.max(initial=0) < 10 else "tab20", s=6)
    ax.set_title(title if method == "t-SNE" else title.replace("t-SNE", "PCA"), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(*sc.legend_elements(), title="cluster", fontsize=7, loc="best", markerscale=0.8)
    return save_figure(fig, path, dpi=120)


def _in_dim(model, spec: dict | None) -> int:
    """Input width from the export's spec (`export.json`, whose model spec sits under "spec"), else the model."""
    io = (spec or {}).get("spec", spec) or {}
    try:
        return int(io["inputs"]["x"]["shape"][1])
    except (TypeError, KeyError, IndexError, ValueError):
        return int(model.in_dim)


def read_features(path: Path, in_dim: int) -> tuple[np.ndarray, list[str]]:
    """Features [N, in_dim] float32 and node names from a .csv (with header) or whitespace .txt file."""
    path = Path(path)
    expected = (
        f"a .csv with a header row or a whitespace-separated .txt, one node per row, {in_dim} numeric "
        f"feature columns (a .csv may add a '{ID_COLUMNS[0]}' column)"
    )
    if not path.is_file():
        raise InputError(path, expected, problem="input file not found")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".txt", ".tsv"):
        raise InputError(path, expected, problem=f"unsupported file type {suffix!r}")
    try:
        if suffix == ".csv":
            import pandas as pd

            frame = pd.read_csv(path)
            id_cols = [c for c in frame.columns if str(c).strip().lower() in ID_COLUMNS]
            names = frame[id_cols[0]].astype(str).tolist() if id_cols else None
            frame = frame.drop(columns=id_cols)
            if len(frame) == 0:
                raise InputError(path, expected, problem="no rows")
            bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
            if bad:
                raise InputError(path, expected, problem=f"non-numeric values in column(s) {bad[:5]}")
            x = frame.to_numpy(dtype=np.float64)
        else:
            x = np.loadtxt(path, dtype=np.float64, ndmin=2)
            names = None
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad input file
        raise InputError(path, expected, problem=f"cannot parse ({e})") from e
    if x.ndim != 2 or x.shape[0] == 0:
        raise InputError(path, expected, problem="no rows")
    if x.shape[1] != in_dim:
        raise InputError(path, expected, problem=f"{x.shape[1]} feature columns, the model expects {in_dim}")
    with np.errstate(over="ignore"):
        x = x.astype(np.float32)  # the model's precision: values beyond its range (3.4e38) become inf here
    if not np.isfinite(x).all():
        raise InputError(path, expected, problem="missing, nan or inf values (or beyond float32's 3.4e38)")
    return x, names if names is not None else [str(i) for i in range(len(x))]


@torch.no_grad()
def predict(model, input_path: Path, out_dir: Path, spec: dict) -> dict:
    """Soft-cluster every node of `input_path`; write predictions.csv and tsne.png under `out_dir`."""
    x, names = read_features(Path(input_path), _in_dim(model, spec))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    q, z = model(torch.from_numpy(x))
    if not (torch.isfinite(q).all() and torch.isfinite(z).all()):
        raise InputError(input_path, "features on the scale the model was trained on", problem="non-finite output")
    confidence, cluster = q.max(dim=1)
    csv_path = out_dir / "predictions.csv"
    with csv_path.open("w") as f:
        f.write("node,cluster,confidence\n")
        for name, c, p in zip(names, cluster.tolist(), confidence.tolist(), strict=True):
            f.write(f"{name},{c},{p:.6f}\n")
    png = tsne_plot(
        z.numpy(), cluster.numpy(), out_dir / "tsne.png", f"SCGC clusters of {Path(input_path).name} (t-SNE of z)"
    )
    return {"predictions": csv_path, "tsne": png}

"""Clustering metrics as in the SDCN/SCGC evaluation (`evaluation.eva`): ACC, NMI, ARI, macro-F1.

ACC and F1 first map clusters to classes with the Hungarian algorithm on the contingency table
(`scipy.optimize.linear_sum_assignment`, maximising matched nodes). When there are more clusters than
classes, the unmatched clusters count as wrong; fewer clusters leave some classes unpredicted (their
F1 is 0). NMI (arithmetic normalisation) and ARI are scikit-learn's and need no matching.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score


def match_clusters(y_true, y_pred) -> np.ndarray:
    """`y_pred` relabelled with the class each cluster is matched to (-1 for unmatched clusters)."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true and y_pred differ in length: {y_true.shape} vs {y_pred.shape}")
    classes, t = np.unique(y_true, return_inverse=True)
    clusters, c = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((len(clusters), len(classes)), dtype=np.int64)
    np.add.at(counts, (c, t), 1)
    rows, cols = linear_sum_assignment(counts, maximize=True)
    mapping = np.full(len(clusters), -1, dtype=np.int64)
    mapping[rows] = cols
    mapped = mapping[c]
    return np.where(mapped >= 0, classes[np.maximum(mapped, 0)], -1)


def cluster_accuracy(y_true, y_pred) -> float:
    """Best accuracy over one-to-one cluster->class mappings."""
    y_true = np.asarray(y_true).ravel()
    return float((match_clusters(y_true, y_pred) == y_true).mean())


def clustering_metrics(y_true, y_pred) -> dict[str, float]:
    """{"acc", "nmi", "ari", "f1"} of predicted cluster ids against true labels."""
    y_true, y_pred = np.asarray(y_true).ravel(), np.asarray(y_pred).ravel()
    mapped = match_clusters(y_true, y_pred)
    return {
        "acc": float((mapped == y_true).mean()),
        "nmi": float(normalized_mutual_info_score(y_true, y_pred, average_method="arithmetic")),
        "ari": float(adjusted_rand_score(y_true, y_pred)),
        "f1": float(f1_score(y_true, mapped, labels=np.unique(y_true), average="macro", zero_division=0)),
    }

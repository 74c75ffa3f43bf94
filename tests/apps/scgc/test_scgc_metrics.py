"""Clustering metrics: Hungarian-matched ACC and F1, NMI and ARI as scikit-learn."""

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, f1_score, normalized_mutual_info_score

from apps.scgc.metrics import cluster_accuracy, clustering_metrics, match_clusters


def test_permuted_labels_score_perfectly():
    y = np.array([0, 0, 1, 1, 2, 2, 2])
    pred = np.array([2, 2, 0, 0, 1, 1, 1])  # same partition, other names
    m = clustering_metrics(y, pred)
    assert m == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0, "f1": 1.0})


def test_known_confusion():
    y = np.array([0] * 5 + [1] * 5)
    pred = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])  # cluster 1 -> class 0 (4 right), cluster 0 -> class 1 (5 right)
    assert cluster_accuracy(y, pred) == pytest.approx(0.9)
    mapped = match_clusters(y, pred)
    assert mapped.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    assert clustering_metrics(y, pred)["f1"] == pytest.approx(f1_score(y, mapped, average="macro"))


def test_more_clusters_than_classes_count_unmatched_as_wrong():
    y = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 2, 3])
    assert cluster_accuracy(y, pred) == pytest.approx(0.5)
    assert (match_clusters(y, pred) == -1).sum() == 2


def test_nmi_ari_match_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 4, 300), rng.integers(0, 5, 300)
    m = clustering_metrics(y, pred)
    assert m["nmi"] == pytest.approx(normalized_mutual_info_score(y, pred))
    assert m["ari"] == pytest.approx(adjusted_rand_score(y, pred))
    # brute force over all one-to-one maps of the 5 clusters onto the 4 classes (+ one left out)
    from itertools import permutations

    best = max(
        np.mean(np.array([dict(zip(range(5), p)).get(c, -1) for c in pred]) == y) for p in permutations(range(5))
    )
    assert m["acc"] == pytest.approx(best)

"""Tissue labels derived from a T1 image alone, the same rule for every brain: 3-class k-means of the intensities
inside the brain (skull-stripped: voxels above a small threshold), classes ordered by intensity, which in T1 is
CSF < grey matter < white matter. Used where two brains need one label set (Colin27 carries AAL regions, the
MNI152 template tissue maps, the macaque NeuroMaps regions)."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans

TISSUES = ("background", "csf", "grey_matter", "white_matter")
SAMPLE = 200_000  # voxels the centres are fitted on; every voxel is then assigned to its nearest centre


def tissue_labels(image: np.ndarray, threshold: float = 0.02, seed: int = 0) -> np.ndarray:
    """[X, Y, Z] image in [0, 1] -> int64 labels 0 background, 1 CSF, 2 grey matter, 3 white matter."""
    inside = image > threshold
    values = image[inside].reshape(-1, 1).astype(np.float64)
    rng = np.random.default_rng(seed)
    fit = values[rng.choice(len(values), min(SAMPLE, len(values)), replace=False)]
    centres = np.sort(KMeans(3, n_init=4, random_state=seed).fit(fit).cluster_centers_[:, 0])
    labels = np.zeros(image.shape, np.int64)
    labels[inside] = 1 + np.abs(values - centres[None, :]).argmin(axis=1)
    return labels

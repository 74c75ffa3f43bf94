"""Volumes to the 2-D slices a slice-wise segmenter sees, and back: crop to the labelled region, square, resample
in-plane, and split along the slice axis into slabs that share no voxels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class SliceStack:
    image: np.ndarray  # [Z, S, S] float32
    labels: np.ndarray  # [Z, S, S] int64
    spacing: tuple[float, float, float]  # mm of (row, column, slice)


def square_crop(labels: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """In-plane (axes 0, 1) square window around every labelled voxel (+ margin), centred on the labels; it may
    reach outside the volume (the caller pads)."""
    found = np.argwhere(labels > 0)
    if len(found) == 0:
        raise ValueError("no labelled voxel to crop around")
    low, high = found.min(0)[:2] - margin, found.max(0)[:2] + margin + 1
    side = int((high - low).max())
    centre = (low + high) // 2
    start = centre - side // 2
    return slice(int(start[0]), int(start[0]) + side), slice(int(start[1]), int(start[1]) + side)


def _window(volume: np.ndarray, window: tuple[slice, slice]) -> np.ndarray:
    """volume[window] with zeros where the window leaves the volume."""
    pads = [(max(0, -w.start), max(0, w.stop - n)) for w, n in zip(window, volume.shape[:2])]
    padded = np.pad(volume, pads + [(0, 0)] * (volume.ndim - 2))
    return padded[tuple(slice(w.start + p[0], w.stop + p[0]) for w, p in zip(window, pads))]


def _resize(volume: np.ndarray, size: int) -> np.ndarray:
    """In-plane (axes 0, 1) resize of a float volume [S, S, Z] to [size, size, Z]. Shrinking, each output pixel is
    the mean over the input area it covers (fractional voxels weighted by their overlap); enlarging, bilinear."""
    x = torch.from_numpy(np.ascontiguousarray(volume.transpose(2, 0, 1)))[:, None]
    mode = {"mode": "area"} if size < volume.shape[0] else {"mode": "bilinear", "align_corners": False}
    return F.interpolate(x, size=(size, size), **mode)[:, 0].numpy().transpose(1, 2, 0)


def resample_slices(
    image: np.ndarray, labels: np.ndarray, voxel_mm: tuple[float, float, float], size: int, margin: int = 4
) -> SliceStack:
    """Slices along axis 2 of `image`/`labels` [X, Y, Z], cropped to a square around the labels and resampled to
    size x size. Shrinking, each output pixel's image value is the mean over the area it covers, and its label the
    class covering most of that area (no label is invented, and a thin structure keeps the pixels it mostly fills
    rather than those a nearest-neighbour grid happens to hit)."""
    window = square_crop(labels, margin)
    image, labels = _window(image, window), _window(labels, window)
    zoom = size / image.shape[0]
    image = _resize(image.astype(np.float32), size)
    classes = np.unique(labels)
    shares = np.stack([_resize((labels == k).astype(np.float32), size) for k in classes])
    labels = classes[shares.argmax(0)]
    spacing = (voxel_mm[0] / zoom, voxel_mm[1] / zoom, float(voxel_mm[2]))
    return SliceStack(
        np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32),
        np.ascontiguousarray(labels.transpose(2, 0, 1), dtype=np.int64),
        spacing,
    )


def slab_split(n: int, held_out: dict[str, list[tuple[float, float]]], gap: int) -> dict[str, np.ndarray]:
    """Indices 0..n-1 into `train` and the held-out splits, each given as slabs [start, stop) in fractions of n.
    The `gap` slices on each side of a held-out slab go to no split, so that no training slice is the immediate
    neighbour of a held-out one. Held-out slabs may not overlap (ValueError)."""
    owner = np.full(n, "train", dtype=object)
    for split, slabs in held_out.items():
        for start, stop in slabs:
            a, b = int(round(start * n)), int(round(stop * n))
            if not 0 <= a < b <= n or (owner[a:b] != "train").any():
                raise ValueError(f"slab {(start, stop)} of {split} is empty, outside [0, 1] or overlaps another")
            owner[max(0, a - gap) : a] = owner[b : b + gap] = "gap"
            owner[a:b] = split
    return {split: np.flatnonzero(owner == split) for split in ("train", *held_out)}


def slabs(indices: np.ndarray) -> list[np.ndarray]:
    """Runs of consecutive indices: the held-out volumes a split consists of."""
    return np.split(indices, np.flatnonzero(np.diff(indices) != 1) + 1) if len(indices) else []

"""A rated music corpus, whatever its source: audio files, per-step label times, the consensus curves, the
individual annotators' ratings, and which pieces and annotators are held out. Readers: the embedded set
(below) and DEAM / PMEmo (apps/dmer/real.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.errors import DatasetError

SPLITS = ("train", "val", "test")


@dataclass
class Corpus:
    """ids [P]; audio [P] files; times [P, T] label times (s) in each file; consensus [P, T, 2] (arousal, valence)
    in [-1, 1]; splits [P]; ratings: (piece index, annotator, [T, 2]); annotator_split: annotator -> split."""

    ids: list[str]
    audio: list[Path]
    times: np.ndarray
    consensus: np.ndarray
    splits: list[str]
    ratings: list[tuple[int, str, np.ndarray]] = field(default_factory=list)
    annotator_split: dict[str, str] = field(default_factory=dict)

    def indices(self, split: str) -> list[int]:
        return [i for i, s in enumerate(self.splits) if s == split]

    def annotator_tasks(self, split: str, piece_split: str | None = None) -> dict[str, list[tuple[int, np.ndarray]]]:
        """annotator -> [(piece, rating)] for the annotators of `split` (on pieces of `piece_split`, if given)."""
        tasks: dict[str, list] = {}
        for piece, who, rating in self.ratings:
            if self.annotator_split.get(who) == split and (piece_split is None or self.splits[piece] == piece_split):
                tasks.setdefault(who, []).append((piece, rating))
        return tasks


def seeded_splits(n: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """Whole pieces to val and test, by a seeded permutation (at least one each when n >= 3)."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(test_fraction * n)) if n >= 3 else 0
    n_val = max(1, round(val_fraction * n)) if n >= 3 else 0
    splits = ["train"] * n
    for i in order[:n_test]:
        splits[i] = "test"
    for i in order[n_test : n_test + n_val]:
        splits[i] = "val"
    return splits


def read_embedded(folder: Path) -> Corpus:
    """The built `music21_rendered` folder (apps/dmer/embedded.py). The consensus of a piece is the mean of its
    annotators' ratings, as DEAM's averaged annotations are."""
    expected = "pieces.json, annotators.json, labels.npz and audio/ (rebuilt by deleting the folder)"
    try:
        info = json.loads((folder / "pieces.json").read_text())
        people = json.loads((folder / "annotators.json").read_text())
        with np.load(folder / "labels.npz", allow_pickle=False) as f:
            ratings, piece_of, who = f["ratings"], f["rating_piece"], f["rating_annotator"]
    except (OSError, KeyError, ValueError) as e:
        raise DatasetError(folder, expected, card="music21_rendered", problem=str(e)) from e
    pieces = info["pieces"]
    steps = ratings.shape[1]
    times = np.tile((np.arange(steps) + 0.5) / info["step_rate"], (len(pieces), 1))
    consensus = np.stack([ratings[piece_of == p].mean(0) for p in range(len(pieces))])
    names = [person["id"] for person in people]
    return Corpus(
        ids=[p["id"] for p in pieces],
        audio=[folder / "audio" / f"{p['id']}.flac" for p in pieces],
        times=times,
        consensus=consensus.astype(np.float32),
        splits=[p["split"] for p in pieces],
        ratings=[(int(p), names[a], r) for p, a, r in zip(piece_of, who, ratings)],
        annotator_split={person["id"]: person["split"] for person in people},
    )

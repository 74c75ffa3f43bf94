"""DEAM and PMEmo read as they are distributed (data_cards/deam.md, data_cards/pmemo.md).

DEAM (`data.root` holds DEAM_Annotations/ and DEAM_audio/):
    DEAM_audio/MEMD_audio/<song_id>.mp3
    DEAM_Annotations/annotations/annotations averaged per song/dynamic (per second annotations)/{arousal,valence}.csv
        song_id, sample_15000ms, sample_15500ms, ...   (2 Hz from 15 s, in [-1, 1]; shorter songs end in blanks)
    DEAM_Annotations/annotations/annotations per each rater/dynamic (per second annotations)/{arousal,valence}/<id>.csv
        WorkerId, sample_15000ms, ...                   (one row per rater; optional: personalisation only)
PMEmo 2019 (`data.root` holds annotations/ and chorus/):
    chorus/<musicId>.mp3
    annotations/dynamic_annotations.csv: musicId, frameTime, Arousal(mean), Valence(mean)   (2 Hz, in [0, 1])
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from apps.dmer.corpus import Corpus, seeded_splits
from common.errors import DatasetError

DEAM_AVERAGED = "DEAM_Annotations/annotations/annotations averaged per song/dynamic (per second annotations)"
DEAM_RATERS = "DEAM_Annotations/annotations/annotations per each rater/dynamic (per second annotations)"
DEAM_AUDIO = "DEAM_audio/MEMD_audio"
PMEMO_DYNAMIC = "annotations/dynamic_annotations.csv"
PMEMO_COLUMNS = ("musicId", "frameTime", "Arousal(mean)", "Valence(mean)")
SAMPLE_COLUMN = re.compile(r"sample_(\d+)ms")


def _read_csv(path: Path, expected: str, card: str) -> pd.DataFrame:
    if not path.is_file():
        raise DatasetError(path, expected, card, "file not found")
    try:
        frame = pd.read_csv(path, skipinitialspace=True)
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a broken file
        raise DatasetError(path, expected, card, f"unreadable CSV ({e})") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _sample_columns(frame: pd.DataFrame, path: Path, steps: int, card: str) -> tuple[list[str], np.ndarray]:
    """The first `steps` sample_<ms>ms columns and their times in seconds."""
    columns = [c for c in frame.columns if SAMPLE_COLUMN.fullmatch(c)]
    if len(columns) < steps:
        raise DatasetError(path, f"at least {steps} sample_<ms>ms columns", card, f"found {len(columns)}")
    columns = columns[:steps]
    return columns, np.array([int(SAMPLE_COLUMN.fullmatch(c).group(1)) / 1000.0 for c in columns])


def read_deam(root: Path, steps: int, val_fraction: float, test_fraction: float, seed: int) -> Corpus:
    expected = "song_id then sample_<ms>ms columns at 2 Hz"
    curves, times = {}, None
    for d, name in enumerate(("arousal", "valence")):
        path = root / DEAM_AVERAGED / f"{name}.csv"
        frame = _read_csv(path, expected, "deam")
        columns, times = _sample_columns(frame, path, steps, "deam")
        for song, row in zip(frame.iloc[:, 0].astype(int), frame[columns].to_numpy(dtype=float)):
            curves.setdefault(song, [None, None])[d] = row
    songs = sorted(s for s, (a, v) in curves.items() if a is not None and v is not None and np.isfinite([a, v]).all())
    if not songs:
        raise DatasetError(root / DEAM_AVERAGED, f"songs with both curves over their first {steps} steps", "deam")
    ratings, annotator_split = [], {}
    index = {song: i for i, song in enumerate(songs)}
    splits = seeded_splits(len(songs), val_fraction, test_fraction, seed)
    for song in songs:
        per_rater = [root / DEAM_RATERS / name / f"{song}.csv" for name in ("arousal", "valence")]
        if not all(p.is_file() for p in per_rater):
            continue
        rows = []
        for path in per_rater:
            frame = _read_csv(path, "WorkerId then sample_<ms>ms columns", "deam")
            columns, _ = _sample_columns(frame, path, steps, "deam")
            rows.append(dict(zip(frame["WorkerId"].astype(str), frame[columns].to_numpy(dtype=float))))
        for worker in sorted(set(rows[0]) & set(rows[1])):
            curve = np.stack([rows[0][worker], rows[1][worker]], axis=-1)
            if np.isfinite(curve).all():
                ratings.append((index[song], worker, curve.astype(np.float32)))
                # an annotator who rated any test song is held out (a test annotator is never trained on)
                if splits[index[song]] == "test" or worker not in annotator_split:
                    annotator_split[worker] = "test" if splits[index[song]] == "test" else "train"
    return Corpus(
        ids=[str(s) for s in songs],
        audio=[root / DEAM_AUDIO / f"{s}.mp3" for s in songs],
        times=np.tile(times, (len(songs), 1)),
        consensus=np.stack([np.stack(curves[s], axis=-1) for s in songs]).astype(np.float32),
        splits=splits,
        ratings=[r for r in ratings if annotator_split[r[1]] == "test" or splits[r[0]] != "test"],
        annotator_split=annotator_split,
    )


def read_pmemo(root: Path, steps: int, val_fraction: float, test_fraction: float, seed: int) -> Corpus:
    path = root / PMEMO_DYNAMIC
    frame = _read_csv(path, ", ".join(PMEMO_COLUMNS) + " columns", "pmemo")
    missing = [c for c in PMEMO_COLUMNS if c not in frame.columns]
    if missing:
        raise DatasetError(path, ", ".join(PMEMO_COLUMNS) + " columns", "pmemo", f"missing column(s) {missing}")
    ids, times, curves = [], [], []
    for music_id, rows in frame.sort_values(["musicId", "frameTime"]).groupby("musicId"):
        if len(rows) < steps:
            continue
        rows = rows.iloc[:steps]
        ids.append(str(int(music_id)))
        times.append(rows["frameTime"].to_numpy(dtype=float))
        curves.append(2.0 * rows[["Arousal(mean)", "Valence(mean)"]].to_numpy(dtype=float) - 1.0)  # [0, 1] -> [-1, 1]
    if not ids:
        raise DatasetError(path, f"songs with at least {steps} frames", "pmemo", "none found")
    return Corpus(
        ids=ids,
        audio=[root / "chorus" / f"{i}.mp3" for i in ids],
        times=np.stack(times),
        consensus=np.stack(curves).astype(np.float32),
        splits=seeded_splits(len(ids), val_fraction, test_fraction, seed),
    )

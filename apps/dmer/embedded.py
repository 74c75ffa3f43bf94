"""The embedded set `music21_rendered`: real compositions from the music21 corpus, performed with varied
instruments, tempi, dynamics, articulation, registers and changes of mode, rendered by FluidSynth, with proxy
valence/arousal curves and the ratings of simulated annotators (data_cards/music21_rendered.md).

Everything follows from `seed`: which pieces, how each is played, the labels, the annotators and the splits.
Whole pieces are held out for val and test; test pieces are rated only by held-out annotators.

Folder layout (`build_embedded`):
    audio/<piece>.flac     the rendered excerpt (mono, `sample_rate`)
    pieces.json            per piece: id, corpus path, ensemble, programs, performance, key, split
    labels.npz             reference [P, T, 2] (arousal, valence proxy), features (raw per-step features),
                           ratings [R, T, 2], rating_piece [R], rating_annotator [R]
    annotators.json        per annotator: id, split, response parameters
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import soundfile

from common.audio.emotion_annotators import annotate, sample_annotators
from common.audio.emotion_proxy import proxy_labels, step_features
from common.audio.features import onset_times, rms_db, step_times
from common.audio.music_render import render
from common.audio.music_score import Performance, estimate_key, perform, score_notes

FORMAT_VERSION = 1
# (corpus composer, file suffix, share of the pieces): homophonic chorales, madrigals and masses, classical
# string quartets, Italian trecento songs.
SOURCES = (
    ("bach", ".mxl", 0.45),
    ("monteverdi", ".mxl", 0.15),
    ("palestrina", ".krn", 0.15),
    ("trecento", ".xml", 0.13),
    ("mozart", ".mxl", 0.06),
    ("haydn", ".mxl", 0.06),
)
# General MIDI programs (0-based) by ensemble, top part first; "mixed" draws a program per part.
ENSEMBLES = {
    "piano": [0],
    "harpsichord": [6],
    "organ": [19],
    "strings": [40, 40, 41, 42],
    "string_ensemble": [48],
    "choir": [52],
    "brass": [56, 60, 57, 58],
    "woodwinds": [73, 68, 71, 70],
    "guitar": [24],
    "mallets": [11, 12],
}
MIXED_POOL = (0, 6, 11, 19, 24, 40, 41, 42, 48, 52, 56, 57, 60, 68, 70, 71, 73)
HOP_SECONDS = 0.1  # level frames for the loudness feature
STEP_RATE = 2.0  # annotation steps per second (DEAM, PMEmo)


def candidates(rng: np.random.Generator, num_pieces: int) -> list[tuple[str, list[Path]]]:
    """Per source, its corpus files in a seeded order (more than needed: a file that fails to parse is skipped)."""
    from music21 import corpus

    out = []
    for composer, suffix, share in SOURCES:
        paths = sorted(p for p in corpus.getComposer(composer) if p.suffix == suffix)
        out.append((composer, [paths[i] for i in rng.permutation(len(paths))], max(1, round(share * num_pieces))))
    return out


def sample_performance(rng: np.random.Generator, span: float, seconds: float) -> Performance:
    bpm = float(np.exp(rng.uniform(np.log(50), np.log(170))))
    changes = rng.random()  # none (30%), one (45%) or two (25%) changes of mode, at times relative to the excerpt
    if changes < 0.3:
        mode_changes = ()
    elif changes < 0.75:
        mode_changes = (float(rng.uniform(7 / 30, 23 / 30)) * seconds,)
    else:
        mode_changes = (float(rng.uniform(4 / 30, 13 / 30)) * seconds, float(rng.uniform(17 / 30, 26 / 30)) * seconds)
    return Performance(
        transpose=int(rng.integers(-5, 7)),
        bpm_start=bpm,
        bpm_end=float(np.clip(bpm * np.exp(rng.uniform(-0.45, 0.45)), 40, 200)),
        velocity_start=float(rng.uniform(30, 120)),
        velocity_end=float(rng.uniform(30, 120)),
        swell=float(rng.uniform(-30, 30)) if rng.random() < 0.5 else 0.0,
        legato=float(rng.uniform(0.45, 1.0)),
        start=float(np.floor(rng.uniform(0, span))),
        mode_changes=mode_changes,
    )


def programs_for(ensemble: str, parts: int, rng: np.random.Generator) -> list[int]:
    if ensemble == "mixed":
        return [int(p) for p in rng.choice(MIXED_POOL, size=parts)]
    return ENSEMBLES[ensemble]


def render_piece(path: Path, rng: np.random.Generator, seconds: float, sample_rate: int) -> dict:
    """One excerpt: its audio, performed notes, per-step raw features and its metadata."""
    notes = score_notes(path)
    if len(notes) < 16:
        raise ValueError(f"{path.name}: only {len(notes)} notes")
    key = estimate_key(notes)
    span = float((notes[:, 0] + notes[:, 1]).max())
    performance = sample_performance(rng, span, seconds)
    ensemble = str(rng.choice([*ENSEMBLES, "mixed"]))
    programs = programs_for(ensemble, int(notes[:, 3].max()) + 1, rng)
    played = perform(notes, performance, seconds, key)
    wave = render(played, programs, seconds, sample_rate)
    times = step_times(round(seconds * STEP_RATE), STEP_RATE)
    features = step_features(
        played, times, performance.bpm(times, seconds), rms_db(wave, sample_rate, HOP_SECONDS), HOP_SECONDS
    )
    onsets = onset_times(wave, sample_rate)  # librosa's view of the same music: the data card's sanity check
    features["audio_onset_rate"] = np.array([((onsets >= t - 1.5) & (onsets < t + 1.5)).sum() / 3.0 for t in times])
    meta = {
        "source": str(path),
        "ensemble": ensemble,
        "programs": programs,
        "performance": asdict(performance),
        "key": list(key),
        "notes": len(played),
        "peak": float(np.abs(wave).max()),
    }
    return {"wave": wave, "features": features, "meta": meta}


def assign_ratings(splits: list[str], num_annotators: int, test_annotators: int, per_piece: int, rng):
    """(piece, annotator) pairs: train/val pieces by `per_piece` of the training annotators, test pieces by every
    held-out annotator (so each held-out annotator has several test pieces to adapt on and be scored on)."""
    train_ids = np.arange(num_annotators - test_annotators)
    test_ids = np.arange(num_annotators - test_annotators, num_annotators)
    pairs = []
    for piece, split in enumerate(splits):
        raters = test_ids if split == "test" else rng.choice(train_ids, size=per_piece, replace=False)
        pairs += [(piece, int(a)) for a in sorted(raters)]
    return pairs


def build_embedded(
    out: Path,
    num_pieces: int = 150,
    seconds: float = 30.0,
    sample_rate: int = 22050,
    num_val: int = 16,
    num_test: int = 20,
    num_annotators: int = 30,
    test_annotators: int = 6,
    raters_per_piece: int = 5,
    seed: int = 0,
    show_progress: bool = True,
) -> None:
    """Write the set into `out` (build_once's temporary folder)."""
    from rich.progress import Progress

    rng = np.random.default_rng(seed)
    (out / "audio").mkdir(parents=True)
    pieces = []
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task("rendering music21_rendered", total=num_pieces)
        for _, paths, quota in candidates(rng, num_pieces):
            taken = 0
            for path in paths:
                if taken == quota or len(pieces) == num_pieces:
                    break
                try:
                    piece = render_piece(path, np.random.default_rng([seed, len(pieces)]), seconds, sample_rate)
                except Exception:  # noqa: BLE001 - a corpus file music21 cannot read, or too few notes: the next one
                    continue
                piece["meta"]["id"] = f"piece_{len(pieces):03d}"
                soundfile.write(out / "audio" / f"{piece['meta']['id']}.flac", piece["wave"], sample_rate)
                piece.pop("wave")
                pieces.append(piece)
                taken += 1
                bar.advance(task)
    order = rng.permutation(len(pieces))
    splits = ["train"] * len(pieces)
    for i in order[:num_test]:
        splits[i] = "test"
    for i in order[num_test : num_test + num_val]:
        splits[i] = "val"
    features = {k: np.stack([p["features"][k] for p in pieces]) for k in pieces[0]["features"]}
    reference = proxy_labels({k: v for k, v in features.items() if k != "audio_onset_rate"})
    annotators = sample_annotators(num_annotators, rng)
    pairs = assign_ratings(splits, num_annotators, test_annotators, raters_per_piece, rng)
    ratings = np.stack([annotate(annotators[a], reference[p], np.random.default_rng([seed, p, a])) for p, a in pairs])
    np.savez_compressed(
        out / "labels.npz",
        reference=reference,
        ratings=ratings,
        rating_piece=np.array([p for p, _ in pairs]),
        rating_annotator=np.array([a for _, a in pairs]),
        **{f"feature_{k}": v.astype(np.float32) for k, v in features.items()},
    )
    meta = [p["meta"] | {"split": s} for p, s in zip(pieces, splits)]
    info = {
        "version": FORMAT_VERSION,
        "seed": seed,
        "seconds": seconds,
        "sample_rate": sample_rate,
        "step_rate": STEP_RATE,
        "pieces": meta,
    }
    (out / "pieces.json").write_text(json.dumps(info, indent=1))
    split_of = ["test" if a >= num_annotators - test_annotators else "train" for a in range(num_annotators)]
    people = [{"id": f"annotator_{a:02d}", "split": split_of[a]} | asdict(x) for a, x in enumerate(annotators)]
    (out / "annotators.json").write_text(json.dumps(people, indent=1))

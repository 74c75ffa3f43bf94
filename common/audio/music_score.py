"""Scores as note tables: music21 parsing, key finding, and the performer's choices that turn a score into notes
in seconds (transposition, a tempo curve, a dynamics curve, articulation, a change of mode).

A note table is a float array [n, 5] with columns `NOTE_COLUMNS`: onset and duration (quarter notes in a score,
seconds once performed), MIDI pitch, part index, MIDI velocity (0 in a score, set by the performance).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

NOTE_COLUMNS = ("onset", "duration", "pitch", "part", "velocity")
ONSET, DURATION, PITCH, PART, VELOCITY = range(5)

# Krumhansl & Kessler (1982) probe-tone key profiles, tonic first.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
# Scale degrees (semitones above the tonic) that change between a key and its parallel mode: major -> harmonic
# minor lowers the third and the sixth; minor -> major raises them and the natural seventh.
TO_MINOR = {4: 3, 9: 8}
TO_MAJOR = {3: 4, 8: 9, 10: 11}


def score_notes(path: str | Path) -> np.ndarray:
    """The notes of a score file music21 reads (its corpus paths included), ties merged, grace notes dropped."""
    from music21 import converter

    score = converter.parse(str(path))
    parts = list(getattr(score, "parts", [])) or [score]
    rows = []
    for index, part in enumerate(parts):
        for element in part.stripTies().flatten().notes:
            length = float(element.duration.quarterLength)
            if length <= 0:
                continue
            for pitch in getattr(element, "pitches", ()):
                rows.append((float(element.offset), length, pitch.midi, index, 0.0))
    notes = np.array(rows, dtype=np.float64).reshape(-1, len(NOTE_COLUMNS))
    return notes[np.lexsort((notes[:, PITCH], notes[:, ONSET]))]


def pitch_class_histogram(notes: np.ndarray, start: float = -np.inf, end: float = np.inf) -> np.ndarray:
    """[12] duration-weighted pitch-class histogram of the notes sounding in [start, end)."""
    overlap = np.minimum(notes[:, ONSET] + notes[:, DURATION], end) - np.maximum(notes[:, ONSET], start)
    weights = np.clip(overlap, 0.0, None)
    return np.bincount(notes[:, PITCH].astype(int) % 12, weights=weights, minlength=12)


def key_scores(histogram: np.ndarray) -> np.ndarray:
    """[2, 12] correlation of a pitch-class histogram with the major (row 0) and minor (row 1) profile of each
    tonic (Krumhansl-Schmuckler key finding). A flat or empty histogram correlates with nothing: zeros."""
    if np.ptp(histogram) == 0:
        return np.zeros((2, 12))
    rolled = [np.stack([np.roll(profile, tonic) for tonic in range(12)]) for profile in (MAJOR_PROFILE, MINOR_PROFILE)]
    return np.stack([[np.corrcoef(histogram, row)[0, 1] for row in profiles] for profiles in rolled])


def estimate_key(notes: np.ndarray) -> tuple[int, str]:
    """(tonic pitch class, "major" | "minor") of the best-correlated key profile."""
    mode, tonic = np.unravel_index(np.argmax(key_scores(pitch_class_histogram(notes))), (2, 12))
    return int(tonic), ("major", "minor")[mode]


def change_mode(notes: np.ndarray, tonic: int, mode: str, after: float) -> np.ndarray:
    """Move the notes starting at or after `after` to the parallel mode (C major -> C minor, or back)."""
    mapping = TO_MINOR if mode == "major" else TO_MAJOR
    out = notes.copy()
    late = out[:, ONSET] >= after
    degree = (out[late, PITCH].astype(int) - tonic) % 12
    out[late, PITCH] += np.array([mapping.get(int(d), int(d)) - int(d) for d in degree], dtype=np.float64)
    return out


@dataclass(frozen=True)
class Performance:
    """How one excerpt is played. Curves are linear from start to end value over the excerpt, in seconds.

    transpose: semitones; bpm_start, bpm_end: tempo (quarter notes per minute); velocity_start, velocity_end:
    MIDI velocity; swell: a bump of this many velocity units peaking mid-excerpt (negative: a dip);
    legato: sounding fraction of each written duration; start: score position (quarters) of the excerpt's first
    beat; mode_changes: seconds at which the music moves to the parallel mode (and back, at the next one).
    """

    transpose: int = 0
    bpm_start: float = 90.0
    bpm_end: float = 90.0
    velocity_start: float = 80.0
    velocity_end: float = 80.0
    swell: float = 0.0
    legato: float = 0.9
    start: float = 0.0
    mode_changes: tuple[float, ...] = ()

    def bpm(self, seconds: np.ndarray, length: float) -> np.ndarray:
        return self.bpm_start + (self.bpm_end - self.bpm_start) * np.clip(seconds / length, 0, 1)

    def velocity(self, seconds: np.ndarray, length: float) -> np.ndarray:
        x = np.clip(seconds / length, 0, 1)
        curve = self.velocity_start + (self.velocity_end - self.velocity_start) * x + self.swell * np.sin(np.pi * x)
        return np.clip(curve, 1, 127)


def perform(notes: np.ndarray, performance: Performance, seconds: float, key: tuple[int, str]) -> np.ndarray:
    """The score's notes as heard in the first `seconds` of the performance: onsets and durations in seconds,
    velocities set. A score shorter than the excerpt is played again from its start (as a da capo)."""
    grid = np.linspace(0.0, seconds, int(seconds * 1000) + 1)
    beats = np.concatenate([[0.0], np.cumsum(performance.bpm(grid[1:], seconds) / 60.0 * np.diff(grid))])
    span = float((notes[:, ONSET] + notes[:, DURATION]).max())
    start = performance.start % span
    copies = int(np.ceil((beats[-1] + start) / span)) + 1
    played = np.concatenate([notes + np.array([k * span, 0, 0, 0, 0]) for k in range(copies)])
    played[:, ONSET] -= start
    played = played[(played[:, ONSET] >= 0) & (played[:, ONSET] < beats[-1])]
    onset = np.interp(played[:, ONSET], beats, grid)
    end = np.interp(played[:, ONSET] + played[:, DURATION] * performance.legato, beats, grid, right=seconds + 2.0)
    out = played.copy()
    out[:, ONSET], out[:, DURATION] = onset, np.maximum(end - onset, 0.02)
    out[:, PITCH] = np.clip(out[:, PITCH] + performance.transpose, 21, 108)
    out[:, VELOCITY] = performance.velocity(onset, seconds)
    tonic, mode = (key[0] + performance.transpose) % 12, key[1]
    for change in performance.mode_changes:
        out = change_mode(out, tonic, mode, change)
        mode = "minor" if mode == "major" else "major"
    return out

"""Proxy valence and arousal from what the music does, step by step.

These are not human ratings. They encode the regularities music-psychology studies report (fast, dense,
loud, high music rates as more aroused; major, consonant, higher, faster music as more positive) as a fixed
weighted sum of measured features, so that a model has something real to learn from audio alone:

- arousal: tempo, note-onset density, loudness (RMS of the rendered audio), register;
- valence: mode (major vs minor key-profile correlation), consonance, register, tempo.

Features are measured per step in a window around the step's time (longer for mode, which needs a few
chords), z-scored over the whole set, weighted, smoothed over 2 s (ratings drift, they do not jump) and
squashed into [-1, 1] with tanh, the range of DEAM's dynamic ratings.
"""

from __future__ import annotations

import numpy as np

from common.audio.music_score import DURATION, ONSET, PITCH, key_scores, pitch_class_histogram

AROUSAL_WEIGHTS = {"tempo": 0.35, "density": 0.25, "loudness": 0.3, "register": 0.1}
VALENCE_WEIGHTS = {"mode": 0.5, "consonance": 0.2, "register": 0.15, "tempo": 0.15}
DISSONANT_INTERVAL_CLASSES = (1, 2, 6)  # minor/major seconds (sevenths) and the tritone
WINDOW = 3.0  # seconds around a step for density, register, consonance and loudness
MODE_WINDOW = 6.0
SMOOTH_STEPS = 5  # 2.5 s at 2 Hz


def _sounding(notes: np.ndarray, t: float) -> np.ndarray:
    return notes[(notes[:, ONSET] <= t) & (notes[:, ONSET] + notes[:, DURATION] > t), PITCH]


def dissonance(notes: np.ndarray, start: float, end: float, rate: float = 10.0) -> float:
    """Fraction of dissonant pitch-class intervals among the simultaneous note pairs sampled at `rate` Hz."""
    pairs = bad = 0
    for t in np.arange(start, end, 1.0 / rate):
        pcs = np.unique(_sounding(notes, t).astype(int) % 12)
        if len(pcs) < 2:
            continue
        diff = np.abs(pcs[:, None] - pcs[None, :])[np.triu_indices(len(pcs), 1)]
        pairs += len(diff)
        bad += int(np.isin(np.minimum(diff, 12 - diff), DISSONANT_INTERVAL_CLASSES).sum())
    return bad / pairs if pairs else 0.0


def step_features(
    notes: np.ndarray, times: np.ndarray, bpm: np.ndarray, level_db: np.ndarray, hop_seconds: float
) -> dict[str, np.ndarray]:
    """Raw per-step features of performed notes (seconds): `bpm` [T] the tempo at each step, `level_db` [frames]
    the audio's RMS level (frames every `hop_seconds`)."""
    onsets = np.unique(np.round(notes[:, ONSET], 2))
    out = {name: np.zeros(len(times)) for name in ("tempo", "density", "loudness", "register", "mode", "consonance")}
    for i, t in enumerate(times):
        lo, hi = t - WINDOW / 2, t + WINDOW / 2
        out["tempo"][i] = np.log2(bpm[i] / 90.0)
        out["density"][i] = np.log2(1.0 + ((onsets >= lo) & (onsets < hi)).sum() / WINDOW)
        frames = level_db[max(0, int(lo / hop_seconds)) : max(1, int(hi / hop_seconds))]
        out["loudness"][i] = frames.mean() if len(frames) else level_db[-1]
        ends = np.minimum(notes[:, ONSET] + notes[:, DURATION], hi)
        overlap = np.clip(ends - np.maximum(notes[:, ONSET], lo), 0, None)
        out["register"][i] = (overlap @ notes[:, PITCH] / overlap.sum() - 60.0) / 12.0 if overlap.sum() else 0.0
        scores = key_scores(pitch_class_histogram(notes, t - MODE_WINDOW / 2, t + MODE_WINDOW / 2))
        out["mode"][i] = scores[0].max() - scores[1].max()
        out["consonance"][i] = -dissonance(notes, lo, hi)
    return out


def _smooth(x: np.ndarray, steps: int) -> np.ndarray:
    """Moving average along the last axis, edges averaged over the part of the window inside the clip."""
    kernel = np.ones(steps)
    pad = steps // 2
    total = np.apply_along_axis(lambda r: np.convolve(np.pad(r, pad), kernel, "valid"), -1, x)
    count = np.convolve(np.pad(np.ones(x.shape[-1]), pad), kernel, "valid")
    return total / count


def proxy_labels(features: dict[str, np.ndarray]) -> np.ndarray:
    """[P, T, 2] (arousal, valence) in (-1, 1) from per-step features {name: [P, T]} of a whole set."""
    z = {k: (v - v.mean()) / (v.std() + 1e-8) for k, v in features.items()}
    dims = []
    for weights in (AROUSAL_WEIGHTS, VALENCE_WEIGHTS):
        raw = sum(w * z[k] for k, w in weights.items()) / np.sqrt(sum(w * w for w in weights.values()))
        dims.append(np.tanh(0.7 * _smooth(raw, SMOOTH_STEPS)))
    return np.stack(dims, axis=-1).astype(np.float32)

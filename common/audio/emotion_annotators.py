"""Simulated annotators: each person rates the same music their own way.

An annotator's dynamic rating of a piece is the reference curve seen through a personal response: a lag
(continuous ratings trail the music by a second or two), a gain (how strongly they react) around the
neutral point, an offset (a personal bias toward calm or excited, sad or happy), and slowly drifting noise
(an AR(1) process: a hand on a slider wanders). Ratings stay in [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_LAG = 4  # steps (2 s at 2 Hz)


@dataclass(frozen=True)
class Annotator:
    """Per-dimension (arousal, valence) offset and gain, a lag in steps, the noise scale and its step correlation."""

    offset: tuple[float, float]
    gain: tuple[float, float]
    lag: int
    noise: float
    drift: float = 0.8


def sample_annotators(n: int, rng: np.random.Generator) -> list[Annotator]:
    return [
        Annotator(
            offset=tuple(rng.normal(0.0, 0.2, 2).round(4)),
            gain=tuple(rng.uniform(0.5, 1.5, 2).round(4)),
            lag=int(rng.integers(0, MAX_LAG + 1)),
            noise=float(rng.uniform(0.03, 0.08)),
        )
        for _ in range(n)
    ]


def annotate(annotator: Annotator, curve: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[T, 2] the annotator's rating of a reference curve [T, 2] (arousal, valence)."""
    lagged = np.concatenate([np.repeat(curve[:1], annotator.lag, axis=0), curve[: len(curve) - annotator.lag]])
    noise = np.zeros_like(curve)
    shocks = rng.normal(0.0, annotator.noise * np.sqrt(1 - annotator.drift**2), curve.shape)
    noise[0] = rng.normal(0.0, annotator.noise, 2)
    for t in range(1, len(curve)):
        noise[t] = annotator.drift * noise[t - 1] + shocks[t]
    rating = np.asarray(annotator.gain) * lagged + np.asarray(annotator.offset) + noise
    return np.clip(rating, -1.0, 1.0).astype(np.float32)

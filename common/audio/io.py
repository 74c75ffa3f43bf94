"""The one way the audio apps read and write sound files.

Reading goes through librosa (soundfile for wav/flac/ogg, audioread otherwise), always as mono float32 at the
sample rate asked for. Errors name the file: `InputError` for a user's file given to predict, `DatasetError`
naming the data card for a file of a dataset.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import librosa
import numpy as np
import soundfile

from common.errors import DatasetError, InputError
from common.utils.files import atomic_write

EXPECTED = "an audio file librosa can decode (wav, flac, ogg, mp3, ...) with at least one sample"


def load_audio(
    path: str | Path, sample_rate: int, card: str | None = None, max_seconds: float | None = None
) -> np.ndarray:
    """[T] float32 mono samples of the file at `path`, resampled to `sample_rate` (the first `max_seconds` only)."""
    path = Path(path)

    def error(problem: str):
        return InputError(path, EXPECTED, problem) if card is None else DatasetError(path, EXPECTED, card, problem)

    if not path.is_file():
        raise error("input file not found" if card is None else "audio file not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warns on every non-soundfile format
            wave, _ = librosa.load(path, sr=sample_rate, mono=True, duration=max_seconds)
    except Exception as exc:  # decoders raise many types for truncated or foreign files
        raise error(f"unreadable audio file ({type(exc).__name__}: {exc})") from None
    if wave.size == 0:
        raise error("audio file holds no samples")
    if not np.isfinite(wave).all():
        raise error("audio file holds NaN or infinite samples")
    return wave.astype(np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM wav, atomically."""
    wave = np.clip(np.asarray(wave, dtype=np.float32), -1.0, 1.0)
    return atomic_write(path, lambda tmp: soundfile.write(tmp, wave, sample_rate, subtype="PCM_16", format="WAV"))

"""Sound files: a written wav reads back (resampled when asked), and what is not audio is a named error."""

from __future__ import annotations

import numpy as np
import pytest

from common.audio.io import load_audio, write_wav
from common.errors import DatasetError, InputError


def test_wav_round_trip_and_resampling(tmp_path):
    t = np.arange(16000) / 16000
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = write_wav(tmp_path / "a.wav", tone, 16000)
    back = load_audio(path, 16000)
    assert back.dtype == np.float32 and back.shape == (16000,)
    assert np.abs(back - tone).max() < 1 / 2**14  # 16-bit quantisation
    half = load_audio(path, 8000)
    assert half.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(half))
    assert abs(np.argmax(spectrum) * 8000 / len(half) - 440) < 2  # the tone survives resampling
    assert load_audio(path, 16000, max_seconds=0.25).shape == (4000,)
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]


def test_not_audio_is_named(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF not really")
    with pytest.raises(InputError, match="unreadable audio"):
        load_audio(tmp_path / "x.wav", 16000)
    with pytest.raises(DatasetError, match="data_cards/deam.md"):
        load_audio(tmp_path / "missing.wav", 16000, card="deam")
    write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(InputError, match="no samples"):
        load_audio(tmp_path / "empty.wav", 16000)

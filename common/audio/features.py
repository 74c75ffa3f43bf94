"""Audio features with librosa: log-mel spectrograms, CQT chroma, the windows of either around each annotation
step, loudness, onsets and tempo.

Log-mels are absolute (dB re full scale, power 1.0), not normalised to each clip's peak: how loud music is says
much about its arousal, and a per-clip reference would erase it.
"""

from __future__ import annotations

import librosa
import numpy as np

FLOOR_DB = -100.0  # silence, and the padding beyond a clip's ends


def frame_hop(sample_rate: int, hop_seconds: float) -> int:
    return max(1, round(sample_rate * hop_seconds))


def log_mel(
    wave: np.ndarray,
    sample_rate: int,
    n_mels: int = 64,
    hop_seconds: float = 0.1,
    fmin: float = 30.0,
    n_fft: int = 2048,
) -> np.ndarray:
    """[frames, n_mels] float32 log-mel power in dB; frame k is centred at k * hop_seconds. A longer `n_fft`
    resolves lower notes (bins of sample_rate / n_fft Hz; a semitone at 200 Hz is 12 Hz wide)."""
    hop = frame_hop(sample_rate, hop_seconds)
    mel = librosa.feature.melspectrogram(y=wave, sr=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels, fmin=fmin)
    return np.maximum(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None), FLOOR_DB).T.astype(np.float32)


def chroma(wave: np.ndarray, sample_rate: int, hop_seconds: float = 0.1, fine_hop: int = 512) -> np.ndarray:
    """[frames, 12] CQT chroma (C first, each frame's peak 1), frames as in `log_mel`. The CQT runs at a fine hop
    (its octave decimation needs a power-of-two multiple) and is averaged into each `hop_seconds` frame."""
    fine = librosa.feature.chroma_cqt(y=wave, sr=sample_rate, hop_length=fine_hop).T
    frames = 1 + len(wave) // frame_hop(sample_rate, hop_seconds)
    which = np.clip(np.round(np.arange(len(fine)) * fine_hop / sample_rate / hop_seconds).astype(int), 0, frames - 1)
    out = np.zeros((frames, 12))
    np.add.at(out, which, fine)
    return (out / np.maximum(np.bincount(which, minlength=frames), 1)[:, None]).astype(np.float32)


def step_times(num_steps: int, rate: float = 2.0, start: float = 0.0) -> np.ndarray:
    """[num_steps] centres of annotation steps at `rate` Hz from `start` seconds (step t covers [t, t+1) / rate)."""
    return start + (np.arange(num_steps) + 0.5) / rate


def step_windows(
    mel: np.ndarray, times: np.ndarray, hop_seconds: float = 0.1, window_seconds: float = 5.0, pad: float = FLOOR_DB
):
    """[T, W, n_mels] the log-mel frames of a window of `window_seconds` centred on each time (W = frames in a
    window, odd), silence (`pad`: FLOOR_DB for a log-mel, 0 for chroma) beyond the clip's ends."""
    half = round(window_seconds / hop_seconds / 2)
    padded = np.pad(mel, ((half, half), (0, 0)), constant_values=pad)
    centres = np.clip(np.round(np.asarray(times) / hop_seconds).astype(int), 0, len(mel) - 1) + half
    index = centres[:, None] + np.arange(-half, half + 1)[None, :]
    return padded[index]


def rms_db(wave: np.ndarray, sample_rate: int, hop_seconds: float = 0.1) -> np.ndarray:
    """[frames] RMS level in dB re full scale, frames as in `log_mel`."""
    rms = librosa.feature.rms(y=wave, frame_length=2048, hop_length=frame_hop(sample_rate, hop_seconds))[0]
    return np.maximum(20 * np.log10(np.maximum(rms, 1e-5)), FLOOR_DB).astype(np.float32)


def onset_times(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Seconds of the note onsets librosa detects (spectral-flux peaks)."""
    return librosa.onset.onset_detect(y=wave, sr=sample_rate, units="time")


def tempo_bpm(wave: np.ndarray, sample_rate: int) -> float:
    """The global tempo librosa's beat tracker estimates, in beats per minute."""
    return float(np.atleast_1d(librosa.feature.tempo(y=wave, sr=sample_rate))[0])

"""Log-mel features keep absolute level, chroma names the pitch classes sounding, windows are centred on their
steps, and librosa's onsets and tempo find what a click track holds."""

from __future__ import annotations

import numpy as np
import pytest

from common.audio.features import FLOOR_DB, chroma, log_mel, onset_times, rms_db, step_times, step_windows, tempo_bpm

SR = 22050


def _tone(seconds=2.0, amplitude=0.5, freq=440.0):
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _clicks(bpm=120.0, seconds=8.0):
    wave = np.zeros(int(seconds * SR), dtype=np.float32)
    for start in np.arange(0.25, seconds, 60.0 / bpm):
        i = int(start * SR)
        wave[i : i + 400] = np.hanning(400) * np.sin(2 * np.pi * 2000 * np.arange(400) / SR)
    return wave


def test_log_mel_frames_and_absolute_level():
    quiet, loud = log_mel(_tone(amplitude=0.05), SR, 32, 0.1), log_mel(_tone(amplitude=0.5), SR, 32, 0.1)
    assert quiet.shape == (21, 32) and quiet.dtype == np.float32  # centred frames every 0.1 s over 2 s
    band = loud[5:15].mean(0).argmax()
    assert loud[5:15, band].mean() - quiet[5:15, band].mean() == pytest.approx(20.0, abs=0.1)  # 10x amplitude
    assert log_mel(np.zeros(SR, np.float32), SR, 32, 0.1).min() == FLOOR_DB


def test_128_bands_and_a_long_fft_tell_low_semitones_apart():
    """Mode lives in semitones: A3 (220 Hz) and A#3 (233 Hz) share a band of 64 (about 50 Hz wide there) but
    not of 128 (25 Hz); and with a 4096-point FFT (5.4 Hz bins, against 10.8 Hz) E4's band leaks less into
    F4's. Measured: peaks 3/3 (64) and 6/7 (128); leak 17 dB (2048) and 32 dB (4096) below the peak."""

    def profile(freq, n_mels, n_fft=4096):
        return log_mel(_tone(freq=freq), SR, n_mels, 0.1, n_fft=n_fft)[5:15].mean(0)

    semitone = 2 ** (1 / 12)
    assert profile(220, 64).argmax() == profile(220 * semitone, 64).argmax()
    assert profile(220, 128).argmax() + 1 == profile(220 * semitone, 128).argmax()
    e4, f4 = profile(330, 128).argmax(), profile(330 * semitone, 128).argmax()
    leak = {n: profile(330, 128, n)[e4] - profile(330, 128, n)[f4] for n in (2048, 4096)}
    assert leak[4096] > leak[2048] + 8  # 15 dB measured: margin for librosa's filter and window details


def test_rms_level_of_a_sine():
    assert np.median(rms_db(_tone(amplitude=0.5), SR, 0.1)) == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.1)


def test_step_windows_are_centred_and_padded_with_silence():
    mel = np.arange(40, dtype=np.float32)[:, None].repeat(3, axis=1)  # frame k holds the value k
    times = step_times(4, rate=2.0)  # 0.25, 0.75, 1.25, 1.75 s
    windows = step_windows(mel, times, hop_seconds=0.1, window_seconds=1.0)
    assert windows.shape == (4, 11, 3)
    assert windows[1, 5, 0] == round(0.75 / 0.1)  # the centre frame is the step's time
    assert (windows[0, :3, 0] == FLOOR_DB).all() and windows[0, 3, 0] == 0  # before the clip: silence


def test_chroma_frames_match_the_log_mel_and_name_the_chord():
    """An A minor triad (A3 E4 C5), its first second then silence: A, C and E lead the chroma, frame for frame with
    the log-mel."""
    t = np.arange(2 * SR) / SR
    wave = sum(np.sin(2 * np.pi * f * t) for f in (220.0, 329.63, 523.25)).astype(np.float32) * 0.2 * (t < 1)
    frames = chroma(wave, SR, 0.2)
    assert frames.shape == (len(log_mel(wave, SR, 16, 0.2)), 12) and frames.dtype == np.float32
    assert set(np.argsort(frames[2])[-3:]) == {9, 0, 4}  # A, C, E (C is bin 0)
    assert frames[2].max() == pytest.approx(1.0, abs=0.05)  # each CQT frame peaks at 1; a 0.2 s frame averages 8


def test_onsets_and_tempo_of_a_click_track():
    clicks = _clicks(bpm=120.0)
    onsets = onset_times(clicks, SR)
    assert len(onsets) == pytest.approx(16, abs=1)
    assert np.median(np.diff(onsets)) == pytest.approx(0.5, abs=0.03)
    assert tempo_bpm(clicks, SR) == pytest.approx(120.0, rel=0.05)

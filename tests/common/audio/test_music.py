"""Scores to sound: key finding, changes of mode, performances in seconds, MIDI files FluidSynth plays at the
right pitch, proxy emotion features that move the way the music does, simulated annotators."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from common.audio.emotion_annotators import Annotator, annotate
from common.audio.emotion_proxy import dissonance, proxy_labels
from common.audio.music_render import SOUNDFONT, midi_bytes, render
from common.audio.music_score import PITCH, Performance, change_mode, estimate_key, perform

C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72, 67, 64, 60]
A_MINOR = [57, 59, 60, 62, 64, 65, 68, 69, 64, 60, 57]


def _notes(pitches, part=0):
    """One note per quarter."""
    return np.array([[i, 1.0, p, part, 0.0] for i, p in enumerate(pitches)], dtype=float)


def test_key_finding_and_change_of_mode():
    assert estimate_key(_notes(C_MAJOR)) == (0, "major")
    assert estimate_key(_notes(A_MINOR)) == (9, "minor")
    minor = change_mode(_notes(C_MAJOR), tonic=0, mode="major", after=0.0)
    assert sorted(set(minor[:, PITCH].astype(int) % 12)) == [0, 2, 3, 5, 7, 8, 11]  # C harmonic minor
    assert estimate_key(minor) == (0, "minor")
    late = change_mode(_notes(C_MAJOR), 0, "major", after=5.0)  # only notes from beat 5 on move
    assert (late[:5, PITCH] == _notes(C_MAJOR)[:5, PITCH]).all() and late[9, PITCH] == 63


def test_performance_maps_beats_to_seconds_and_repeats_a_short_score():
    notes = _notes(C_MAJOR)
    played = perform(notes, Performance(bpm_start=120, bpm_end=120, legato=1.0, transpose=2), 10.0, (0, "major"))
    assert np.allclose(played[:4, 0], [0.0, 0.5, 1.0, 1.5], atol=1e-3)  # a quarter is 0.5 s at 120 bpm
    assert np.allclose(played[:4, 1], 0.5, atol=1e-3) and played[0, PITCH] == 62
    assert len(played) == 20 and played[:, 0].max() < 10.0  # 11 beats, then again from the start
    faster = perform(notes, Performance(bpm_start=60, bpm_end=180), 10.0, (0, "major"))
    assert np.diff(faster[:, 0])[-1] < np.diff(faster[:, 0])[0]  # accelerando: notes come closer together
    loud = perform(notes, Performance(velocity_start=30, velocity_end=120), 10.0, (0, "major"))
    assert loud[0, 4] == pytest.approx(30) and loud[-1, 4] > 100


def test_midi_file_parses_back_with_music21():
    from music21 import converter

    played = perform(_notes(C_MAJOR[:4]), Performance(bpm_start=60, bpm_end=60), 4.0, (0, "major"))
    score = converter.parseData(midi_bytes(played, programs=[0]), format="midi")
    assert [n.pitch.midi for n in score.flatten().notes] == C_MAJOR[:4]


@pytest.mark.skipif(shutil.which("fluidsynth") is None or not SOUNDFONT.is_file(), reason="no fluidsynth")
def test_fluidsynth_plays_the_written_pitch():
    note = np.array([[0.0, 1.5, 69.0, 0.0, 100.0]])  # A4, 440 Hz, on a flute (a near-pure tone)
    wave = render(note, programs=[73], seconds=2.0, sample_rate=22050, reverb=False)
    assert wave.shape == (44100,) and np.abs(wave).max() > 0.01
    spectrum = np.abs(np.fft.rfft(wave[2205:22050]))
    assert np.argmax(spectrum) * 22050 / len(wave[2205:22050]) == pytest.approx(440.0, rel=0.02)


def test_dissonance_of_chords():
    triad = np.array([[0, 2, p, 0, 80] for p in (60, 64, 67)], dtype=float)
    cluster = np.array([[0, 2, p, 0, 80] for p in (60, 61, 62)], dtype=float)
    assert dissonance(triad, 0.0, 1.0) == 0.0
    assert dissonance(cluster, 0.0, 1.0) == 1.0  # C-C#, C#-D, C-D: all seconds


def test_proxy_labels_follow_their_features():
    steps = np.linspace(-1, 1, 20)
    zero = np.zeros((2, 20))
    features = {k: zero.copy() for k in ("tempo", "density", "loudness", "register", "mode", "consonance")}
    features["tempo"] = np.stack([steps, -steps])  # piece 0 speeds up, piece 1 slows down
    features["mode"] = np.stack([np.sign(steps), np.zeros(20)])  # piece 0 turns from minor to major
    labels = proxy_labels(features)
    assert labels.shape == (2, 20, 2) and np.abs(labels).max() < 1
    assert labels[0, -1, 0] > labels[0, 0, 0] and labels[1, -1, 0] < labels[1, 0, 0]  # arousal follows tempo
    assert labels[0, -1, 1] - labels[0, 0, 1] > labels[1, 0, 1] - labels[1, -1, 1] > 0  # valence: mode, tempo


def test_annotator_lag_gain_offset_and_noise():
    curve = np.stack([np.linspace(-0.5, 0.5, 30), np.zeros(30)], axis=-1)
    exact = Annotator(offset=(0.1, -0.2), gain=(1.5, 1.0), lag=3, noise=0.0)
    rating = annotate(exact, curve, np.random.default_rng(0))
    assert np.allclose(rating[3:, 0], 1.5 * curve[:-3, 0] + 0.1, atol=1e-6)
    assert np.allclose(rating[:3, 0], 1.5 * curve[0, 0] + 0.1) and np.allclose(rating[:, 1], -0.2)
    noisy = annotate(Annotator((0, 0), (1, 1), 0, noise=0.05), curve, np.random.default_rng(0)) - curve
    assert 0.01 < noisy.std() < 0.1
    assert np.corrcoef(noisy[1:, 0], noisy[:-1, 0])[0, 1] > 0.5  # drifting, not white

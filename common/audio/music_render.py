"""Performed notes to sound: a Standard MIDI File written here, rendered by the FluidSynth command line with a
General MIDI soundfont (Debian `fluidsynth` + `fluid-soundfont-gm`)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from common.audio.io import load_audio
from common.audio.music_score import DURATION, ONSET, PART, PITCH, VELOCITY
from common.errors import ManyheadsError

SOUNDFONT = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
TICKS_PER_SECOND = 960  # ticks per quarter at the file's fixed 60 bpm: ticks count milliseconds-ish
DRUM_CHANNEL = 9
MELODIC_CHANNELS = tuple(c for c in range(16) if c != DRUM_CHANNEL)


def _varlen(value: int) -> bytes:
    """MIDI variable-length quantity: 7 bits a byte, high bit set on all but the last."""
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def midi_bytes(notes: np.ndarray, programs: list[int]) -> bytes:
    """A format-0 Standard MIDI File of performed notes (seconds); part p plays General MIDI program
    `programs[p % len(programs)]` on its own channel (parts beyond 15 share channels)."""
    channel = [MELODIC_CHANNELS[p % len(MELODIC_CHANNELS)] for p in range(int(notes[:, PART].max(initial=0)) + 1)]
    events = [(0, 0, bytes([0xFF, 0x51, 3]) + (1_000_000).to_bytes(3, "big"))]  # 60 bpm: a quarter is a second
    for part, ch in enumerate(channel):
        events.append((0, 0, bytes([0xC0 | ch, programs[part % len(programs)] & 0x7F])))
    for onset, duration, pitch, part, velocity in notes[:, [ONSET, DURATION, PITCH, PART, VELOCITY]]:
        ch, key = channel[int(part)], int(pitch)
        start, stop = round(onset * TICKS_PER_SECOND), round((onset + duration) * TICKS_PER_SECOND)
        events.append((start, 2, bytes([0x90 | ch, key, max(1, min(127, round(velocity)))])))
        events.append((max(stop, start + 1), 1, bytes([0x80 | ch, key, 0])))  # offs before ons at one tick
    track, now = bytearray(), 0
    for tick, _, message in sorted(events, key=lambda e: (e[0], e[1])):
        track += _varlen(tick - now) + message
        now = tick
    track += _varlen(0) + bytes([0xFF, 0x2F, 0])
    header = b"MThd" + (6).to_bytes(4, "big") + (0).to_bytes(2, "big") + (1).to_bytes(2, "big")
    return header + TICKS_PER_SECOND.to_bytes(2, "big") + b"MTrk" + len(track).to_bytes(4, "big") + bytes(track)


def render(
    notes: np.ndarray, programs: list[int], seconds: float, sample_rate: int, gain: float = 0.4, reverb: bool = True
) -> np.ndarray:
    """[round(seconds * sample_rate)] float32 mono: the notes played by FluidSynth, cut or padded to `seconds`.

    The level is left as played (no normalisation): how loud the music is stays in the audio."""
    if shutil.which("fluidsynth") is None or not SOUNDFONT.is_file():
        needs = f"the `fluidsynth` command and {SOUNDFONT} (apt: fluidsynth fluid-soundfont-gm)"
        raise ManyheadsError(f"rendering needs {needs}")
    with tempfile.TemporaryDirectory() as tmp:
        mid, wav = Path(tmp) / "piece.mid", Path(tmp) / "piece.wav"
        mid.write_bytes(midi_bytes(notes, programs))
        flags = ["-R", "1" if reverb else "0", "-C", "0"]
        cmd = ["fluidsynth", "-ni", "-q", *flags, "-g", str(gain), "-r", str(sample_rate), "-F", str(wav)]
        subprocess.run([*cmd, str(SOUNDFONT), str(mid)], check=True, capture_output=True, timeout=300)
        wave = load_audio(wav, sample_rate, max_seconds=seconds)
    length = round(seconds * sample_rate)
    return np.pad(wave[:length], (0, max(0, length - len(wave))))

"""`make predict app=dmer input=<wav|mp3|flac|ogg>`: the valence/arousal curve of a recording, at 2 Hz.

A recording of any length is read in sliding windows of the model's `steps` (30 s by default) with half a
window of overlap, as the official inference does; overlapping predictions are averaged. Writes
`emotion.csv` (time_s, arousal, valence) and `emotion.png` (the curves over the log-mel spectrogram).

`ARGS="adapt=<csv>"` personalises first: the CSV is one piece annotated by the listener, with columns
`audio` (its sound file, relative to the CSV's folder), `time` (seconds), `arousal`, `valence` (in [-1, 1]),
one row per 2 Hz step and at least the model's `steps` rows; the model's ADAPT_PREFIX parameters take
ADAPT_STEPS gradient steps at ADAPT_LR on it (the module's defaults in configs/app/dmer.yaml) before predicting.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from apps.dmer.data import clip_input, step_inputs
from apps.dmer.maml import adapt as adapt_params
from apps.dmer.maml import adaptable, call
from apps.dmer.plots import plot_prediction
from apps.dmer.scores import diagonal_attention_loss, score_loss
from common.audio.features import chroma, log_mel, rms_db
from common.audio.io import load_audio
from common.errors import InputError
from common.utils.modes import eval_mode

FORMATS = (".wav", ".mp3", ".flac", ".ogg")
WINDOW_SECONDS, STEP_RATE = 5.0, 2.0
MIN_SECONDS = WINDOW_SECONDS  # one full spectrogram window
SILENCE_DB = -60.0  # loudest 0.1 s frame below this: nothing to hear
ADAPT_STEPS, ADAPT_LR, ADAPT_PREFIX = 16, 0.003, "head."  # the module's adapt_steps, inner_lr, adapt_prefix defaults
ADAPT_COLUMNS = ("audio", "time", "arousal", "valence")


def read_recording(path: Path, sample_rate: int, hop: float) -> np.ndarray:
    if path.suffix.lower() not in FORMATS:
        raise InputError(path, f"an audio file ({', '.join(FORMATS)})", f"unsupported format {path.suffix!r}")
    wave = load_audio(path, sample_rate)
    if len(wave) < MIN_SECONDS * sample_rate:
        raise InputError(path, f"at least {MIN_SECONDS:g} s of audio", f"only {len(wave) / sample_rate:.2f} s")
    if rms_db(wave, sample_rate, hop).max() < SILENCE_DB:
        raise InputError(path, "audible audio", f"silent (no {hop:g} s frame above {SILENCE_DB:g} dBFS)")
    return wave


def features(model, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The log-mel [frames, n_mels] of a recording and its chroma [frames, 12] (None if the model reads none),
    computed as for the model's training data."""
    wave = read_recording(path, model.sample_rate, model.hop_seconds)
    mel = log_mel(wave, model.sample_rate, model.n_mels, model.hop_seconds, n_fft=model.n_fft)
    return mel, chroma(wave, model.sample_rate, model.hop_seconds) if model.chroma else None


def model_inputs(model, feats: tuple, times: np.ndarray, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(windows [1, T, W, bands], clip [1, F, M] or the clip embedding) of one window of steps."""
    mel, pitch = feats
    windows = torch.from_numpy(step_inputs(mel, pitch, times, model.hop_seconds, WINDOW_SECONDS))[None]
    if model.global_features:
        embedding = path.with_suffix(".npy")
        if not embedding.is_file():
            raise InputError(embedding, f"the clip embedding ({model.global_dim} floats) beside the audio")
        return windows, torch.from_numpy(np.load(embedding, allow_pickle=False).astype(np.float32).reshape(1, -1))
    clip = clip_input(mel, times[0] - 0.5 / STEP_RATE, model.clip_frames, model.hop_seconds)
    return windows, torch.from_numpy(clip)[None]


def sliding_prediction(model, feats: tuple, path: Path, params=None) -> tuple[np.ndarray, np.ndarray]:
    """(times [S], curves [S, 2]) over the whole recording, windows of `model.steps` steps, half overlapping."""
    seconds = len(feats[0]) * model.hop_seconds
    total = max(model.steps, int(seconds * STEP_RATE))
    starts = list(range(0, total - model.steps + 1, max(1, model.steps // 2)))
    if starts[-1] != total - model.steps:
        starts.append(total - model.steps)
    times = (np.arange(total) + 0.5) / STEP_RATE
    sums, counts = np.zeros((total, 2)), np.zeros((total, 1))
    with torch.no_grad(), eval_mode(model):
        for start in starts:
            inputs = model_inputs(model, feats, times[start : start + model.steps], path)
            out = model(*inputs) if params is None else call(model, params, *inputs)
            sums[start : start + model.steps] += out[0].numpy()
            counts[start : start + model.steps] += 1
    keep = times <= seconds  # a recording shorter than one window: only its own steps
    return times[keep], (sums / counts)[keep]


def read_adaptation(csv_path: Path, steps: int) -> tuple[Path, np.ndarray, np.ndarray]:
    """(audio path, times [steps], ratings [steps, 2]) of a listener's annotated piece."""
    expected = f"a CSV with columns {', '.join(ADAPT_COLUMNS)} and at least {steps} rows (2 Hz steps)"
    if not csv_path.is_file():
        raise InputError(csv_path, expected, "adapt file not found")
    try:
        frame = pd.read_csv(csv_path)
    except Exception as e:  # noqa: BLE001 - pandas raises many types for a broken file
        raise InputError(csv_path, expected, f"unreadable CSV ({e})") from None
    missing = [c for c in ADAPT_COLUMNS if c not in frame.columns]
    if missing or len(frame) < steps:
        raise InputError(csv_path, expected, f"missing column(s) {missing}" if missing else f"{len(frame)} rows")
    ratings = frame[["arousal", "valence"]].to_numpy(dtype=float)[:steps]
    if not np.isfinite(ratings).all() or np.abs(ratings).max() > 1:
        raise InputError(csv_path, expected, "arousal and valence must be finite and within [-1, 1]")
    return csv_path.parent / str(frame["audio"].iloc[0]), frame["time"].to_numpy(dtype=float)[:steps], ratings


def personalise(model, csv_path: Path) -> dict[str, torch.Tensor]:
    """The model's parameters after ADAPT_STEPS steps of the training loss on the listener's piece."""
    audio, times, ratings = read_adaptation(csv_path, model.steps)
    support = (*model_inputs(model, features(model, audio), times, audio), torch.from_numpy(ratings).float()[None])

    def loss(m, params, batch):
        pred, local_w, global_w = call(m, params, batch[0], batch[1], return_attention=True)
        return score_loss(pred, batch[2]) + (0 if local_w is None else diagonal_attention_loss(local_w, global_w))

    params = {k: p.detach() for k, p in adaptable(model, ADAPT_PREFIX).items()}
    with torch.enable_grad(), eval_mode(model):  # the training set's BatchNorm statistics, as the test's
        adapted = adapt_params(model, params, loss, support, ADAPT_STEPS, ADAPT_LR, first_order=True)
    return {k: p.detach() for k, p in adapted.items()}


def predict(model, input_path: Path, out_dir: Path, spec: dict, adapt: str | None = None) -> dict:
    input_path, out_dir = Path(input_path), Path(out_dir)
    feats = features(model, input_path)
    params = personalise(model, Path(adapt)) if adapt else None
    times, curves = sliding_prediction(model, feats, input_path, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / "emotion.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["time_s", "arousal", "valence"])
        writer.writerows([[f"{t:.2f}", f"{a:.4f}", f"{v:.4f}"] for t, (a, v) in zip(times, curves)])
    who = " (personalised)" if adapt else ""
    title = f"{input_path.name}: mean arousal {curves[:, 0].mean():+.2f}, valence {curves[:, 1].mean():+.2f}{who}"
    picture = plot_prediction(feats[0], model.hop_seconds, times, curves, out_dir / "emotion.png", title)
    print(title)
    return {"curve": csv_path, "picture": picture}

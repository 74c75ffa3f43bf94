"""Training, saving and loading the speech codec (`common.audio.codec.Codec`).

API:
- `train_codec(corpus_dir, out_dir, steps=1500, batch_size=16, segment_seconds=1.0, lr=2e-3, max_utterances=600,
  seed=0, log_every=0, device="cpu", **codec_kwargs) -> Codec`: trains on random one-second crops of the corpus's
  `train` split and writes `out_dir/codec.safetensors` (weights and codebooks, never pickle) and
  `out_dir/codec.json` (the constructor's arguments and a training record).
  Wrap it in `common.data.cache.build_once` to train it once.
- `save_codec(codec, out_dir, record)`, `codec_config(dir) -> dict` (the constructor's options),
  `load_codec(dir) -> Codec` (eval mode; `DatasetError` naming the codec card
  for a missing or malformed folder, `WeightsError` naming the tensor for weights that do not fit).
- `codec_loss(codec, wave, n_used) -> (loss, parts)`: L1 on log-magnitude + L1 on log-mel + 0.25 x commitment.

Quantizer dropout (SoundStream): half of the steps train with the first 1..n_q codebooks only, so the first codes
carry the coarse spectrum: the language model samples the first codebook and the rest refine it.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from common.audio.codec import Codec
from common.audio.io import load_audio
from common.audio.speech import read_corpus_info, read_manifest
from common.errors import DatasetError, WeightsError

CARD = "lina_codec"
WEIGHTS, CONFIG = "codec.safetensors", "codec.json"
EXPECTED = f"a codec folder with {WEIGHTS} and {CONFIG}, as written by common.audio.codec_train.train_codec"
COMMITMENT = 0.25


def codec_loss(codec: Codec, wave: torch.Tensor, n_used: int | None = None):
    predicted, target, commitment = codec.reconstruct(wave, n_used)
    spectral = F.l1_loss(predicted, target)
    mel = F.l1_loss(codec.log_mel(codec.magnitude(predicted)), codec.log_mel(target.exp()))
    return spectral + mel + COMMITMENT * commitment, {"spectral": spectral, "mel": mel, "commitment": commitment}


def _training_waves(corpus_dir: Path, sample_rate: int, max_utterances: int, rng) -> list[np.ndarray]:
    """Up to `max_utterances` train utterances, taken evenly across voices."""
    utterances = read_manifest(corpus_dir, "train")
    if not utterances:
        raise DatasetError(corpus_dir / "manifest.csv", "a corpus with a train split", "espeak_fortunes_speech")
    order = rng.permutation(len(utterances))
    by_voice: dict[str, list] = {}
    for i in order:
        by_voice.setdefault(utterances[i].voice, []).append(utterances[i])
    per_voice = max(1, max_utterances // len(by_voice))
    chosen = [u for us in by_voice.values() for u in us[:per_voice]]
    return [load_audio(u.path, sample_rate, card="espeak_fortunes_speech") for u in chosen]


def _crops(waves, batch_size: int, length: int, rng) -> torch.Tensor:
    batch = np.zeros((batch_size, length), np.float32)
    for row, i in zip(batch, rng.integers(len(waves), size=batch_size), strict=True):
        wave = waves[i]
        start = rng.integers(max(len(wave) - length, 0) + 1)
        piece = wave[start : start + length]
        row[: len(piece)] = piece
    return torch.from_numpy(batch)


def train_codec(
    corpus_dir: str | Path,
    out_dir: str | Path,
    steps: int = 1500,
    batch_size: int = 16,
    segment_seconds: float = 1.0,
    lr: float = 2e-3,
    max_utterances: int = 600,
    seed: int = 0,
    log_every: int = 0,
    device: str = "cpu",
    **codec_kwargs,
) -> Codec:
    """Train a codec on the corpus's train split and save it to `out_dir` (see the module docstring)."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    codec_kwargs.setdefault("sample_rate", read_corpus_info(corpus_dir)["sample_rate"])
    codec = Codec(**codec_kwargs).to(device).train()
    waves = _training_waves(corpus_dir, codec.sample_rate, max_utterances, rng)
    length = int(segment_seconds * codec.sample_rate)
    optimizer = torch.optim.AdamW(codec.parameters(), lr=lr, weight_decay=0.0)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0)))
    )
    start, history = time.time(), []
    for step in range(steps):
        n_used = int(rng.integers(1, codec.n_q + 1)) if rng.random() < 0.5 else None
        loss, parts = codec_loss(codec, _crops(waves, batch_size, length, rng).to(device), n_used)
        if not torch.isfinite(loss):  # never save a codec of NaN weights (every token table would inherit it)
            raise RuntimeError(f"codec training diverged at step {step + 1} of {steps} (loss {float(loss)}): lower lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(codec.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        history.append(float(parts["mel"].detach()))
        if log_every and (step + 1) % log_every == 0:
            print(f"codec step {step + 1}/{steps} loss {loss.item():.3f} mel {np.mean(history[-log_every:]):.3f}")
    record = {"steps": steps, "batch_size": batch_size, "segment_seconds": segment_seconds, "lr": lr, "seed": seed,
              "utterances": len(waves), "train_seconds": round(time.time() - start, 1),
              "final_mel_l1": round(float(np.mean(history[-50:])), 4)}  # fmt: skip
    save_codec(codec.cpu(), out_dir, record)
    return codec.eval()


def save_codec(codec: Codec, out_dir: str | Path, record: dict | None = None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in codec.state_dict().items()}, out_dir / WEIGHTS)
    (out_dir / CONFIG).write_text(json.dumps({"codec": codec.config, "training": record or {}}, indent=1))
    return out_dir


def codec_config(directory: str | Path) -> dict:
    """The constructor options of the codec saved in `directory` (DatasetError if missing or malformed)."""
    config_path = Path(directory) / CONFIG
    if not config_path.is_file() or not (Path(directory) / WEIGHTS).is_file():
        raise DatasetError(directory, EXPECTED, CARD, "codec not found")
    try:
        return dict(json.loads(config_path.read_text())["codec"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(config_path, EXPECTED, CARD, f"malformed codec config ({exc})") from None


def load_codec(directory: str | Path, device: str | torch.device = "cpu") -> Codec:
    """The codec saved in `directory`, in eval mode."""
    directory = Path(directory)
    config, weights_path = codec_config(directory), directory / WEIGHTS
    try:
        codec = Codec(**config)
    except (ValueError, TypeError) as exc:
        raise DatasetError(directory / CONFIG, EXPECTED, CARD, f"malformed codec config ({exc})") from None
    try:
        state = load_file(weights_path)
    except Exception as exc:  # safetensors raises its own error types for truncated or foreign files
        raise WeightsError(weights_path, f"unreadable safetensors file ({exc})") from None
    expected = codec.state_dict()
    for name, tensor in expected.items():
        if name not in state:
            raise WeightsError(weights_path, "missing", name, f"shape {tuple(tensor.shape)}")
        if state[name].shape != tensor.shape:
            raise WeightsError(weights_path, f"shape {tuple(state[name].shape)}", name, f"shape {tuple(tensor.shape)}")
    codec.load_state_dict(state, strict=True)
    return codec.to(device).eval()

"""Voice similarity: MFCC statistics of an utterance, normalised by within-voice variability learnt on the corpus.

API:
- `mfcc_statistics(wave, sample_rate) -> [57] float64`: mean and standard deviation of MFCCs 1-19 and the standard
  deviation of their deltas, over the utterance's active frames (within ACTIVE_DB of its loudest); c0 (loudness)
  is left out.
- `VoiceEmbedder.fit(waves, voices, sample_rate) -> VoiceEmbedder`: learns the corpus mean and the within-class
  covariance normalisation (WCCN, Hatch et al. 2006): the whitening of the average within-voice covariance, so
  that directions a voice varies along from sentence to sentence count little. `embed(wave) -> [57]`,
  `profile(waves) -> [57]` (the mean of unit embeddings: a voice from several utterances),
  `similarity(wave_a, wave_b_or_list) -> float` (cosine in [-1, 1]), `save(path)` / `VoiceEmbedder.load(path)`
  (safetensors).

Why statistics and not a trained neural speaker encoder: the corpus has only a handful of voices; a network
trained to tell six voices apart learns those six, while WCCN on MFCC statistics keeps every dimension and
transfers to voices it never saw (the held-out voices are exactly what initial-state tuning is judged on).
Same-voice pairs score above different-voice pairs on held-out voices (tests/common/audio/test_speech_similarity).
"""

from __future__ import annotations

from pathlib import Path

import librosa
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from common.errors import WeightsError

N_MFCC, ACTIVE_DB = 20, 35
RIDGE = 1e-3  # relative ridge on the within-voice covariance: keeps its whitening finite on small corpora


def mfcc_statistics(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    hop = sample_rate // 100
    mfcc = librosa.feature.mfcc(y=wave, sr=sample_rate, n_mfcc=N_MFCC, n_fft=4 * hop, hop_length=hop)
    rms = librosa.feature.rms(y=wave, frame_length=4 * hop, hop_length=hop)[0]
    active = 20 * np.log10(rms / rms.max() + 1e-10) > -ACTIVE_DB
    frames = mfcc[1:, active[: mfcc.shape[1]]]
    if frames.shape[1] < 3:
        raise ValueError("too little sound in the wave for a voice embedding (fewer than 3 active 10 ms frames)")
    deltas = np.diff(frames, axis=1)
    return np.concatenate([frames.mean(1), frames.std(1), deltas.std(1)]).astype(np.float64)


class VoiceEmbedder:
    def __init__(self, mean: np.ndarray, transform: np.ndarray, sample_rate: int):
        self.mean, self.transform, self.sample_rate = mean, transform, sample_rate

    @classmethod
    def fit(cls, waves, voices, sample_rate: int) -> VoiceEmbedder:
        stats = np.stack([mfcc_statistics(w, sample_rate) for w in waves])
        voices = np.asarray(voices)
        mean = stats.mean(0)
        centred = [stats[voices == v] - stats[voices == v].mean(0) for v in np.unique(voices)]
        within = sum(c.T @ c for c in centred) / len(stats)
        within += RIDGE * np.trace(within) / len(within) * np.eye(len(within))
        values, vectors = np.linalg.eigh(within)
        return cls(mean, vectors / np.sqrt(values), sample_rate)  # x -> W^-1/2 x, up to a rotation

    def embed(self, wave: np.ndarray) -> np.ndarray:
        return (mfcc_statistics(wave, self.sample_rate) - self.mean) @ self.transform

    def profile(self, waves) -> np.ndarray:
        units = [e / np.linalg.norm(e) for e in map(self.embed, waves)]
        return np.mean(units, axis=0)

    def similarity(self, wave_a, wave_b) -> float:
        """Cosine between the embedding of `wave_a` and that of `wave_b` (a wave, or a list of waves: their profile)."""
        a = self.embed(wave_a)
        b = self.profile(wave_b) if isinstance(wave_b, (list, tuple)) else self.embed(wave_b)
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def save(self, path: str | Path) -> Path:
        tensors = {"mean": torch.from_numpy(self.mean), "transform": torch.from_numpy(self.transform)}
        save_file(tensors, path, metadata={"sample_rate": str(self.sample_rate)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> VoiceEmbedder:
        try:
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                sample_rate = int(f.metadata()["sample_rate"])
            tensors = load_file(path)
            return cls(tensors["mean"].numpy(), tensors["transform"].numpy(), sample_rate)
        except Exception as exc:  # missing file, foreign file, missing tensor or metadata
            raise WeightsError(path, f"not a voice embedder ({type(exc).__name__}: {exc})") from None

"""DSAML (Zhang et al., AAAI 2025, arXiv 2412.19200): dynamic music emotion recognition with a dual-scale
attention transformer, after the official code (Littleor/Personalized-DMER, models/PDMER.py and models/layer).

Per step (2 Hz) a 5 s log-mel window goes through a small CNN (the spectrogram feature extractor); the step
features are fused with one embedding of the whole clip; one shared transformer encoder runs twice, with a
local band mask (|i - j| <= 5 steps) and a global one (<= 30), and the two outputs are summed through a
sigmoid; a BiLSTM head reads arousal and valence per step. `model.arch=bilstm` is the plain baseline: the
same per-step CNN straight into the same BiLSTM head, no clip embedding, no attention.

Changes from the official code, and why:
- The clip embedding comes from a trainable CNN over the clip's log-mel (`GlobalClipEncoder`) instead of the
  frozen ImageBind-Huge encoder, which cannot be downloaded here. Precomputed embeddings from any encoder
  (ImageBind included) plug in with `model.global_features=<dir of .npy>`: then the second input is that
  embedding, [N, global_dim].
- Relative positions are a learned per-head bias over the clipped step distance (T5-style), added to the
  logits with the band mask through the attention core's `bias`; BERT's `relative_key` adds q . r(i - j),
  which needs the queries inside the core.
- With `chroma` (the default), each step also reads its window's 12 CQT chroma bins through `KeyProfiles`, a
  learned, key-invariant key finder, standardised (BatchNorm) before fusion: the paper's front end is the
  log-mel alone, from which no linear map and hardly an MLP reads the mode, which the valence of Western music
  follows (README, Results).
- Widths are CPU-sized by default (hidden 128, 2 layers); configs/experiment/dmer_deam.yaml sets the paper's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from common.attention import build
from common.audio.features import FLOOR_DB
from common.audio.music_score import MAJOR_PROFILE, MINOR_PROFILE
from common.errors import ConfigError, check_choice, check_range

ARCHS = ("dsaml", "bilstm")
DB_SHIFT, DB_SCALE = -50.0, 25.0  # log-mel dB -> about zero mean, unit spread (absolute level kept)


def normalize_db(mel: torch.Tensor) -> torch.Tensor:
    return (mel - DB_SHIFT) / DB_SCALE


class SpectrogramExtractor(nn.Module):
    """The official per-step CNN over one log-mel window [frames, n_mels]:
    Conv(1->8, (3, 1), pad (2, 1)) + BN + ReLU + MaxPool 2 -> Conv(8->16, 3x3) + BN + ReLU + MaxPool 2 ->
    Conv 1x1 (16->1) -> flatten. Output width `out_dim` follows from the window size."""

    def __init__(self, frames: int, n_mels: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, (3, 1), padding=(2, 1)),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 1, 1),
            nn.Flatten(),
        )
        h, w = (frames + 2) // 2 - 2, (n_mels + 2) // 2 - 2  # after the first conv+pool, then the 3x3 conv
        self.out_dim = (h // 2) * (w // 2)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """windows [B, T, frames, n_mels] (dB) -> [B, T, out_dim]."""
        b, t = windows.shape[:2]
        return self.net(normalize_db(windows).flatten(0, 1).unsqueeze(1)).unflatten(0, (b, t))


class KeyProfiles(nn.Module):
    """Mode evidence from a chroma window, invariant to transposition: the window's mean pitch-class profile,
    centred and unit-normed, correlated with `profiles` learned 12-bin templates at all 12 transpositions, the
    best transposition kept per template (Krumhansl's key finding, with learned profiles: major against minor
    is a difference of two outputs). The first two templates start as Krumhansl's major and minor profiles, the
    others at random: with a few hundred steps of training, random ones alone hardly move."""

    def __init__(self, profiles: int = 16):
        super().__init__()
        start = 0.3 * torch.randn(profiles, 12)
        start[:2] = torch.tensor(np.stack([MAJOR_PROFILE, MINOR_PROFILE])[:profiles], dtype=torch.float32)
        self.templates = nn.Parameter(start)
        self.register_buffer("rotations", (torch.arange(12)[:, None] + torch.arange(12)[None, :]) % 12, False)
        self.out_dim = profiles

    @staticmethod
    def _unit(x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        return x / (x.norm(dim=-1, keepdim=True) + 1e-6)

    def forward(self, chroma: torch.Tensor) -> torch.Tensor:
        """chroma [B, T, frames, 12] -> [B, T, profiles] correlations in [-1, 1]."""
        rotated = self._unit(chroma.mean(2))[..., self.rotations]  # [B, T, 12 transpositions, 12]
        return (rotated @ self._unit(self.templates).T).amax(-2)


class GlobalClipEncoder(nn.Module):
    """Trainable stand-in for the frozen ImageBind audio encoder: a strided CNN over the clip's whole log-mel,
    mean- and max-pooled over time and frequency, projected to `dim`."""

    def __init__(self, dim: int, channels: int = 32):
        super().__init__()
        layers, width = [], 1
        for out in (channels // 2, channels, 2 * channels):
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.ReLU()]
            width = out
        self.net = nn.Sequential(*layers)
        self.proj = nn.Linear(2 * width, dim)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, frames, n_mels] (dB) -> [B, dim]."""
        h = self.net(normalize_db(clip).unsqueeze(1)).flatten(2)
        return self.proj(torch.cat([h.mean(-1), h.amax(-1)], dim=-1))


class FeatureFusion(nn.Module):
    """The official "ImageBind adapter": h = Linear(sigmoid(Linear(step) + clip)), the clip embedding broadcast
    over the steps."""

    def __init__(self, step_dim: int, dim: int):
        super().__init__()
        self.step = nn.Linear(step_dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, steps: torch.Tensor, clip: torch.Tensor) -> torch.Tensor:
        return self.out(torch.sigmoid(self.step(steps) + clip[:, None, :]))


def band_bias(steps: int, width: int, device=None) -> torch.Tensor:
    """[1, 1, T, T] additive mask: 0 where |i - j| <= width, -inf elsewhere (the official band context mask)."""
    pos = torch.arange(steps, device=device)
    inside = (pos[:, None] - pos[None, :]).abs() <= width
    return torch.zeros(steps, steps, device=device).masked_fill(~inside, float("-inf"))[None, None]


class EncoderLayer(nn.Module):
    """BERT-style post-norm layer: x = LN(x + Attn(x)); x = LN(x + FFN(x)), GELU, dropout."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.attn = build("softmax", dim, num_heads, attn_drop=dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), nn.GELU(), nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor, return_weights: bool = False):
        # Always the core's explicit softmax path (same math as SDPA): its weights feed the diagonal loss, and
        # torch's ONNX exporter cannot decompose SDPA with a float mask here (a view error).
        out, weights = self.attn(x, bias=bias, return_weights=True)
        x = self.norm1(x + self.drop(out))
        x = self.norm2(x + self.drop(self.ffn(x)))
        return (x, weights) if return_weights else x


class DualScaleTransformer(nn.Module):
    """One encoder (shared weights) run with a local and a global band mask; output sigmoid(local + global).

    `forward(x, return_weights=True)` also returns the last layer's attention weights [B, H, T, T] of each
    scale, which the diagonal attention loss reads."""

    def __init__(self, dim, num_heads, num_layers, ffn_dim, dropout, local_width, global_width):
        super().__init__()
        if not 0 < local_width < global_width:
            raise ConfigError("local_width", local_width, f"0 < local_width < global_width={global_width}")
        self.local_width, self.global_width = local_width, global_width
        self.layers = nn.ModuleList(EncoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers))
        self.relative = nn.Embedding(2 * global_width + 1, num_heads)  # per-head bias by clipped distance
        nn.init.zeros_(self.relative.weight)

    def relative_bias(self, steps: int, device) -> torch.Tensor:
        pos = torch.arange(steps, device=device)
        distance = (pos[None, :] - pos[:, None]).clamp(-self.global_width, self.global_width) + self.global_width
        return self.relative(distance).permute(2, 0, 1)[None]  # [1, H, T, T]

    def _run(self, x: torch.Tensor, width: int, return_weights: bool):
        bias = self.relative_bias(x.shape[1], x.device) + band_bias(x.shape[1], width, x.device)
        weights = None
        for i, layer in enumerate(self.layers):
            if return_weights and i == len(self.layers) - 1:
                x, weights = layer(x, bias, return_weights=True)
            else:
                x = layer(x, bias)
        return x, weights

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        local, local_w = self._run(x, self.local_width, return_weights)
        wide, global_w = self._run(x, self.global_width, return_weights)
        out = torch.sigmoid(local + wide)
        return (out, local_w, global_w) if return_weights else out


class EmotionHead(nn.Module):
    """BiLSTM -> Linear -> Dropout -> Linear(2): (arousal, valence) per step."""

    def __init__(self, dim: int, lstm_hidden: int, head_hidden: int, dropout: float):
        super().__init__()
        self.lstm = nn.LSTM(dim, lstm_hidden, batch_first=True, bidirectional=True)
        self.mlp = nn.Sequential(
            nn.Linear(2 * lstm_hidden, head_hidden), nn.Dropout(dropout), nn.Linear(head_hidden, 2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.lstm(x)[0])


class DSAML(nn.Module):
    """Per-step valence/arousal from log-mel windows and one clip input.

    Args:
        arch: dsaml (the paper) | bilstm (per-step CNN + BiLSTM head only).
        n_mels, n_fft, chroma, window_frames, clip_frames, steps, hop_seconds, sample_rate: the input layout and
            the features it was trained on (filled from the data; predict computes the same from a recording).
        global_features: a folder of precomputed clip embeddings (.npy per piece) or null for the trainable
            clip encoder; global_dim: their width (filled from the data; ignored without global_features).
        dim, num_heads, num_layers, ffn_dim, dropout: the dual-scale transformer (shared by both scales).
        local_width, global_width: band half-widths in steps (official: 5 and 30).
        lstm_hidden, head_hidden: the BiLSTM head (per direction) and its MLP.
        key_profiles: templates of the chroma key finder (with chroma).

    Shapes:
        windows [N, steps, window_frames, n_mels (+ 12 chroma bins with chroma)] log-mel dB (then chroma in
        [0, 1]); clip [N, clip_frames, n_mels] log-mel dB, or
        [N, global_dim] with global_features. Output [N, steps, 2]: arousal, valence.
    """

    def __init__(
        self,
        arch: str = "dsaml",
        n_mels: int = 128,
        n_fft: int = 4096,
        chroma: bool = False,
        window_frames: int = 51,
        clip_frames: int = 300,
        steps: int = 60,
        hop_seconds: float = 0.1,
        sample_rate: int = 22050,
        global_features: str | None = None,
        global_dim: int | None = None,
        dim: int = 128,
        num_heads: int = 4,
        num_layers: int = 2,
        ffn_dim: int = 256,
        dropout: float = 0.1,
        local_width: int = 5,
        global_width: int = 30,
        lstm_hidden: int = 64,
        head_hidden: int = 64,
        clip_channels: int = 32,
        key_profiles: int = 16,
    ):
        super().__init__()
        check_choice("arch", arch, ARCHS)
        for key, value in (("n_mels", n_mels), ("window_frames", window_frames), ("steps", steps), ("dim", dim)):
            check_range(key, value, 8 if key in ("n_mels", "window_frames") else 1)
        check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        if global_features is not None and not global_dim:
            raise ConfigError("global_dim", global_dim, "the width of the embeddings in global_features")
        self.arch, self.n_mels, self.window_frames, self.clip_frames, self.steps = (
            arch,
            n_mels,
            window_frames,
            clip_frames,
            steps,
        )
        self.hop_seconds, self.sample_rate, self.n_fft, self.chroma = hop_seconds, sample_rate, n_fft, chroma
        self.global_features, self.global_dim = global_features, global_dim if global_features else None
        self.extractor = SpectrogramExtractor(window_frames, n_mels)
        self.key_finder = KeyProfiles(key_profiles) if chroma else None
        # The correlations vary by ~0.1 around a common ~0.5: standardised, the mode reaches the fusion at the
        # scale of the CNN features and the clip embedding instead of ~20x below them.
        self.key_norm = nn.BatchNorm1d(key_profiles) if chroma else None
        step_dim = self.extractor.out_dim + (key_profiles if chroma else 0)
        if arch == "bilstm":
            self.project = nn.Linear(step_dim, dim)
        else:
            self.clip_encoder = nn.Linear(global_dim, dim) if global_features else GlobalClipEncoder(dim, clip_channels)
            self.fusion = FeatureFusion(step_dim, dim)
            self.transformer = DualScaleTransformer(
                dim, num_heads, num_layers, ffn_dim, dropout, local_width, global_width
            )
        self.head = EmotionHead(dim, lstm_hidden, head_hidden, dropout)

    def forward(self, windows: torch.Tensor, clip: torch.Tensor, return_attention: bool = False):
        """[N, T, 2] (arousal, valence); with `return_attention`, also the last layer's attention weights
        [N, H, T, T] of the local and the global scale (None, None for the bilstm arch)."""
        steps = self.extractor(windows[..., : self.n_mels])
        if self.key_finder is not None:
            key = self.key_finder(windows[..., self.n_mels :])
            steps = torch.cat([steps, self.key_norm(key.flatten(0, 1)).unflatten(0, key.shape[:2])], dim=-1)
        if self.arch == "bilstm":
            out = self.head(self.project(steps))
            return (out, None, None) if return_attention else out
        fused = self.fusion(steps, self.clip_encoder(clip))
        if not return_attention:
            return self.head(self.transformer(fused))
        hidden, local_w, global_w = self.transformer(fused, return_weights=True)
        return self.head(hidden), local_w, global_w

    @property
    def bands(self) -> int:
        """Columns of a window frame: the mel bands, then the chroma bins."""
        return self.n_mels + (12 if self.chroma else 0)

    def example_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        windows = FLOOR_DB / 2 + 20 * torch.randn(2, self.steps, self.window_frames, self.n_mels)
        if self.chroma:
            windows = torch.cat([windows, torch.rand(2, self.steps, self.window_frames, 12)], dim=-1)
        if self.global_features:
            return windows, torch.randn(2, self.global_dim)
        return windows, FLOOR_DB / 2 + 20 * torch.randn(2, self.clip_frames, self.n_mels)

    def export_spec(self) -> dict:
        clip = ["N", self.global_dim] if self.global_features else ["N", self.clip_frames, self.n_mels]
        return {
            "inputs": {
                "windows": {"shape": ["N", self.steps, self.window_frames, self.bands], "dtype": "float32"},
                "clip": {"shape": clip, "dtype": "float32"},
            },
            "outputs": {"arousal_valence": {"shape": ["N", self.steps, 2], "dtype": "float32"}},
            "arch": self.arch,
            "global_features": bool(self.global_features),
            "features": {
                "sample_rate": self.sample_rate,
                "n_mels": self.n_mels,
                "n_fft": self.n_fft,
                "chroma": self.chroma,
                "hop_seconds": self.hop_seconds,
            },
        }

"""The speech codec: log-mel frames -> conv encoder -> residual VQ tokens -> conv decoder -> spectrum -> Griffin-Lim.

API:
- `Codec(sample_rate=16000, n_fft=1024, win_length=800, hop_length=200, n_mels=80, stride=2, channels=192, dim=64,
  n_q=4, codebook_size=256)`, an `nn.Module` with `encode(wave [T] or [B, T]) -> codes [B, frames, n_q] int64`,
  `decode(codes) -> wave [B, T']`, `reconstruct(wave) -> (log-magnitude, target log-magnitude, commitment loss)`
  for training, `log_spectra(wave)`, `spectrum_to_wave(log_magnitude)` and the attributes `sample_rate`,
  `frame_rate` (tokens per second: 40 by default), `n_q`, `codebook_size`.
- `ResidualVQ(n_q, codebook_size, dim)`: nearest-code residual quantisation, codebooks learnt by exponential moving
  averages with dead-code restarts (SoundStream's recipe), quantizer dropout while training.

Why this design (and not a waveform codec like EnCodec or WavTokenizer): the codec has to learn, on 2 CPU cores, in
about three minutes, and still let an ASR understand its output. A waveform decoder only becomes intelligible after
long adversarial training; a spectral decoder trained with L1 losses on log spectra learns in minutes. So the codec
is neural where it matters to the language model - a strided conv encoder packs two 12.5 ms spectral frames into
one token step (40 tokens/s x n_q codebooks, 1.3 kbit/s by default) and a conv decoder predicts the full linear
magnitude spectrum (not only the mel bands: it learns the mel-to-linear inversion, like Tacotron's post-net) - and
the phase comes from fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99), which needs no training. Griffin-Lim
sounds phasey but keeps the spectral envelope an ASR listens to; the codec card measures both ceilings.
"""

from __future__ import annotations

import math

import librosa
import torch
import torch.nn.functional as F
from torch import nn

LOG_FLOOR = 1e-3  # STFT-magnitude floor: about that of 16-bit quantisation noise; quieter is silence alike
LOG_CENTRE, LOG_SCALE = -3.0, 3.0  # log spectra of peak-normalised speech span about [-7, 4]: centred for the convs


class ResBlock(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation)
        self.mix = nn.Conv1d(channels, channels, 1)

    def forward(self, x):
        return x + self.mix(F.gelu(self.conv(F.gelu(x))))


class ResidualVQ(nn.Module):
    """n_q codebooks, each quantising what the ones before left: codes [B, n, n_q] <-> vectors [B, n, dim]."""

    def __init__(self, n_q: int, codebook_size: int, dim: int, decay: float = 0.99, dead_after: float = 1.0):
        super().__init__()
        self.n_q, self.codebook_size, self.decay, self.dead_after = n_q, codebook_size, decay, dead_after
        self.register_buffer("codebooks", torch.randn(n_q, codebook_size, dim) * 0.1)
        self.register_buffer("ema_count", torch.ones(n_q, codebook_size))
        self.register_buffer("ema_sum", self.codebooks.clone())
        self.register_buffer("initialised", torch.tensor(False))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        residual, codes = z, []
        for book in self.codebooks:
            index = torch.cdist(residual, book.expand(residual.shape[0], -1, -1)).argmin(-1)
            codes.append(index)
            residual = residual - book[index]
        return torch.stack(codes, -1)

    def vectors(self, codes: torch.Tensor) -> torch.Tensor:
        return sum(book[codes[..., i]] for i, book in enumerate(self.codebooks[: codes.shape[-1]]))

    def forward(self, z: torch.Tensor, n_used: int | None = None):
        """Quantised z (straight-through gradients) using the first `n_used` codebooks, and the commitment loss."""
        n_used = n_used or self.n_q
        if self.training and not self.initialised:
            self._init_from(z.detach())
        residual, quantised = z, torch.zeros_like(z)
        for i in range(n_used):
            flat = residual.detach().reshape(-1, residual.shape[-1])
            index = torch.cdist(flat, self.codebooks[i]).argmin(-1)
            if self.training:
                self._update(i, flat, index)
            chosen = self.codebooks[i][index].view_as(residual)
            quantised = quantised + chosen
            residual = residual - chosen
        commitment = F.mse_loss(z, quantised.detach())
        return z + (quantised - z).detach(), commitment

    @torch.no_grad()
    def _init_from(self, z: torch.Tensor):
        """Codebooks start as random residual vectors of the first batch (k-means++ would be better by a little)."""
        residual = z.reshape(-1, z.shape[-1])
        for i in range(self.n_q):
            pick = torch.randint(len(residual), (self.codebook_size,), device=z.device)
            self.codebooks[i] = residual[pick]
            self.ema_sum[i] = residual[pick]
            index = torch.cdist(residual, self.codebooks[i]).argmin(-1)
            residual = residual - self.codebooks[i][index]
        self.initialised.fill_(True)

    @torch.no_grad()
    def _update(self, i: int, flat: torch.Tensor, index: torch.Tensor):
        onehot = F.one_hot(index, self.codebook_size).type_as(flat)
        self.ema_count[i].mul_(self.decay).add_(onehot.sum(0), alpha=1 - self.decay)
        self.ema_sum[i].mul_(self.decay).add_(onehot.T @ flat, alpha=1 - self.decay)
        self.codebooks[i] = self.ema_sum[i] / self.ema_count[i].clamp(min=1e-5)[:, None]
        dead = self.ema_count[i] < self.dead_after  # restart unused codes on vectors of this batch
        if dead.any():
            pick = torch.randint(len(flat), (int(dead.sum()),), device=flat.device)
            self.codebooks[i][dead] = flat[pick]
            self.ema_sum[i][dead] = flat[pick]
            self.ema_count[i][dead] = 1.0


class Codec(nn.Module):
    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 1024,
        win_length: int = 800,
        hop_length: int = 200,
        n_mels: int = 80,
        stride: int = 2,
        channels: int = 192,
        dim: int = 64,
        n_q: int = 4,
        codebook_size: int = 256,
        griffin_lim_iters: int = 32,
    ):
        super().__init__()
        if stride < 2 or stride % 2:
            raise ValueError(f"stride={stride}: expected an even number of spectral frames per token step")
        self.config = dict(sample_rate=sample_rate, n_fft=n_fft, win_length=win_length, hop_length=hop_length,
                           n_mels=n_mels, stride=stride, channels=channels, dim=dim, n_q=n_q,
                           codebook_size=codebook_size, griffin_lim_iters=griffin_lim_iters)  # fmt: skip
        self.sample_rate, self.n_fft, self.win_length, self.hop_length = sample_rate, n_fft, win_length, hop_length
        self.stride, self.n_q, self.codebook_size = stride, n_q, codebook_size
        self.griffin_lim_iters = griffin_lim_iters
        self.frame_rate = sample_rate / hop_length / stride
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmax=sample_rate / 2)
        self.register_buffer("mel_basis", torch.from_numpy(mel), persistent=False)
        self.register_buffer("window", torch.hann_window(win_length), persistent=False)
        n_bins = n_fft // 2 + 1
        self.encoder = nn.Sequential(
            nn.Conv1d(n_mels, channels, 5, padding=2),
            ResBlock(channels, 1),
            ResBlock(channels, 3),
            nn.Conv1d(channels, channels, 2 * stride, stride=stride, padding=stride // 2),
            ResBlock(channels, 1),
            ResBlock(channels, 3),
            nn.GELU(),
            nn.Conv1d(channels, dim, 1),
        )
        self.quantizer = ResidualVQ(n_q, codebook_size, dim)
        self.decoder = nn.Sequential(
            nn.Conv1d(dim, channels, 3, padding=1),
            ResBlock(channels, 1),
            ResBlock(channels, 3),
            nn.ConvTranspose1d(channels, channels, 2 * stride, stride=stride, padding=stride // 2),
            ResBlock(channels, 1),
            ResBlock(channels, 3),
            ResBlock(channels, 9),
            nn.GELU(),
            nn.Conv1d(channels, n_bins, 1),
        )

    def frames_of(self, n_samples: int) -> int:
        """Token steps of a wave of `n_samples` samples."""
        return -(-(n_samples // self.hop_length + 1) // self.stride)

    def _stft(self, wave: torch.Tensor) -> torch.Tensor:
        return torch.stft(wave, self.n_fft, self.hop_length, self.win_length, self.window, return_complex=True)

    def log_spectra(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel [B, n_mels, F] and log-magnitude [B, n_bins, F] of `wave` [B, T]; F is a multiple of stride."""
        magnitude = self._stft(wave).abs()
        pad = -magnitude.shape[-1] % self.stride
        magnitude = F.pad(magnitude, (0, pad))
        return self.log_mel(magnitude), magnitude.clamp(min=LOG_FLOOR).log()

    def log_mel(self, magnitude: torch.Tensor) -> torch.Tensor:
        return (self.mel_basis @ magnitude).clamp(min=LOG_FLOOR).log()

    def magnitude(self, log_magnitude: torch.Tensor) -> torch.Tensor:
        """exp of a predicted log-magnitude, capped at the largest STFT magnitude of a wave in [-1, 1] (the
        window's sum): an early training step can predict values whose exp overflows to inf, and the mel of inf
        is NaN."""
        return log_magnitude.clamp(max=math.log(float(self.window.sum()))).exp()

    def as_batch(self, wave) -> torch.Tensor:
        wave = torch.as_tensor(wave, dtype=torch.float32, device=self.mel_basis.device)
        return wave[None] if wave.dim() == 1 else wave

    def _latent(self, log_mel: torch.Tensor) -> torch.Tensor:
        return self.encoder((log_mel - LOG_CENTRE) / LOG_SCALE).transpose(1, 2)  # [B, frames, dim]

    def _decode(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.decoder(vectors.transpose(1, 2)) * LOG_SCALE + LOG_CENTRE

    def reconstruct(self, wave: torch.Tensor, n_used: int | None = None):
        """Training pass: predicted and true log-magnitudes [B, n_bins, F] and the commitment loss."""
        log_mel, log_magnitude = self.log_spectra(self.as_batch(wave))
        quantised, commitment = self.quantizer(self._latent(log_mel), n_used)
        return self._decode(quantised), log_magnitude, commitment

    @torch.no_grad()
    def encode(self, wave) -> torch.Tensor:
        """Codes [B, frames, n_q] int64 of `wave` [T] or [B, T] at `sample_rate` (frames: `frames_of(T)`)."""
        log_mel, _ = self.log_spectra(self.as_batch(wave))
        return self.quantizer.codes(self._latent(log_mel))

    @torch.no_grad()
    def decode_spectrum(self, codes: torch.Tensor) -> torch.Tensor:
        """Log-magnitude [B, n_bins, frames * stride] of codes [B, frames, n_q'] (n_q' <= n_q: coarser)."""
        codes = torch.as_tensor(codes, device=self.mel_basis.device)
        codes = codes[None] if codes.dim() == 2 else codes
        if codes.shape[-1] > self.n_q or codes.min() < 0 or codes.max() >= self.codebook_size:
            raise ValueError(f"codes must be [B, frames, <= {self.n_q}] in [0, {self.codebook_size})")
        return self._decode(self.quantizer.vectors(codes))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Wave [B, T'] of codes [B, frames, n_q] (or [frames, n_q])."""
        return self.spectrum_to_wave(self.decode_spectrum(codes))

    @torch.no_grad()
    def spectrum_to_wave(self, log_magnitude: torch.Tensor, seed: int = 0) -> torch.Tensor:
        """Fast Griffin-Lim: the wave whose STFT magnitude is closest to exp(log_magnitude) [B, n_bins, F]."""
        magnitude = self.magnitude(log_magnitude)
        generator = torch.Generator(device=magnitude.device).manual_seed(seed)
        angles = torch.exp(2j * torch.pi * torch.rand(magnitude.shape, generator=generator, device=magnitude.device))
        length = (magnitude.shape[-1] - 1) * self.hop_length
        previous = torch.zeros_like(angles)
        for _ in range(self.griffin_lim_iters):
            wave = torch.istft(magnitude * angles, self.n_fft, self.hop_length, self.win_length, self.window,
                               length=length)  # fmt: skip
            projected = self._stft(wave)
            accelerated = projected - 0.99 * previous
            angles = accelerated / accelerated.abs().clamp(min=1e-8)
            previous = projected
        wave = torch.istft(magnitude * angles, self.n_fft, self.hop_length, self.win_length, self.window, length=length)
        return wave.clamp(-1.0, 1.0)

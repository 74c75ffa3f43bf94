"""Learning beyond the per-step mean where there is something to learn, in seconds: on log-mel windows whose level
follows a hidden arousal curve, with chroma windows whose mode (major against minor, in a random key per clip)
follows a valence curve, the default model (with chroma) trained with the module's loss (score + diagonal
attention) tracks both curves on held-out clips."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch

from apps.dmer.model import DSAML
from apps.dmer.module import DMERModule
from apps.dmer.scores import ccc, rmse
from common.audio.music_score import MAJOR_PROFILE, MINOR_PROFILE

STEPS, FRAMES, MELS = 16, 9, 16


def _clips(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, STEPS)
    phase, speed = torch.rand(n, 1, generator=g) * 6.28, 1 + 2 * torch.rand(n, 1, generator=g)
    arousal = 0.8 * torch.sin(speed * 2 * math.pi * t + phase)
    valence = 0.8 * torch.cos(speed * math.pi * t + 2 * phase)
    level = (-50 + 25 * arousal[:, :, None, None]).expand(n, STEPS, FRAMES, MELS)  # dB per step
    mel = level + 2 * torch.randn(n, STEPS, FRAMES, MELS, generator=g)
    keys = torch.randint(12, (n,), generator=g).tolist()
    profiles = [torch.tensor(np.roll(np.stack([MAJOR_PROFILE, MINOR_PROFILE]), k, -1)) for k in keys]
    major = (1 + valence[..., None]) / 2  # [n, STEPS, 1]: all major at valence 1, all minor at -1
    pitch = torch.stack([m * p[0] + (1 - m) * p[1] for m, p in zip(major, profiles)]).float() / 6.4
    pitch = (pitch[:, :, None, :] + 0.1 * torch.rand(n, STEPS, FRAMES, 12, generator=g)).clamp(0, 1)
    windows = torch.cat([mel, pitch], dim=-1)
    clip = mel.mean(2)  # [n, STEPS, MELS]: the clip's log-mel, one frame a step
    return windows, clip, torch.stack([arousal, valence], dim=-1)


def test_dsaml_tracks_both_curves_and_beats_the_step_mean():
    torch.manual_seed(0)
    model = DSAML(chroma=True, n_mels=MELS, window_frames=FRAMES, clip_frames=STEPS, steps=STEPS, dim=32, num_heads=4,
                  num_layers=1, ffn_dim=32, lstm_hidden=16, head_hidden=16, clip_channels=8, local_width=2,
                  global_width=8, dropout=0.0)  # fmt: skip
    module = DMERModule(model, optimizer=partial(torch.optim.Adam, lr=3e-3))
    optimizer = module.optimizer_factory(model.parameters())
    train, test = _clips(64, seed=0), _clips(16, seed=1)
    for step in range(150):
        batch = tuple(x[(step * 16) % 64 : (step * 16) % 64 + 16] for x in train)
        optimizer.zero_grad()
        module.loss(model, None, batch).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        pred = model(test[0], test[1])
    target = test[2]
    mean = train[2].mean(0).expand_as(target)
    for d in range(2):
        learned, trivial = (
            ccc(pred[..., d].flatten(), target[..., d].flatten()),
            ccc(mean[..., d].flatten(), target[..., d].flatten()),
        )
        # The curves are a deterministic function of the windows up to noise (2 dB on a 40 dB level swing; 0.1 on
        # chroma bins of 0.4-1): a model that reads the level and the mode in any key gets CCC near 1;
        # 0.7 leaves room for seeds, and the step mean (random phases: about 0) is far below.
        assert learned > 0.7 and learned > trivial + 0.5, (d, learned, trivial)
        assert rmse(pred[..., d].flatten(), target[..., d].flatten()) < rmse(
            mean[..., d].flatten(), target[..., d].flatten()
        )

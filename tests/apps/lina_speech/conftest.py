"""A tiny Lina-Speech and a batch of random text and codec codes (the model's tests need no audio)."""

from __future__ import annotations

import pytest
import torch

from apps.lina_speech.model import LinaSpeech
from apps.lina_speech.tokens import collate_codes

N_Q, CODEBOOK, TEXT_VOCAB = 2, 16, 30


def tiny(arch: str = "gla", **overrides) -> LinaSpeech:
    torch.manual_seed(0)
    kwargs = dict(n_q=N_Q, codebook_size=CODEBOOK, text_vocab=TEXT_VOCAB, dim=32, num_heads=2, n_layer=1)
    kwargs |= dict(text_layers=1, text_heads=2, d_blind=16, dropout=0.0, arch=arch, chunk_size=4, max_frames=12)
    model = LinaSpeech(**(kwargs | overrides)).double().eval()
    with torch.no_grad():  # spread the forget gates so that decay matters in the chunked == recurrent checks
        for layer in model.gla_layers():
            layer.gk_proj[1].bias.uniform_(-4, 4)
    return model


@pytest.fixture
def batch():
    """text [2, 6] (the second padded), audio_in / target [2, 11, 2] from codes of 9 and 5 frames."""
    gen = torch.Generator().manual_seed(1)
    text = torch.randint(1, TEXT_VOCAB, (2, 6), generator=gen)
    text[1, -2:] = 0
    codes = [torch.randint(0, CODEBOOK, (n, N_Q), generator=gen) for n in (9, 5)]
    audio_in, target = collate_codes(codes)
    return text, audio_in, target, codes

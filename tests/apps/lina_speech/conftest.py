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


def synthetic_table(out, n_sentences: int = 48, seed: int = 0):
    """A token table whose codes are a function of the text: each character c becomes two frames with codes
    (3c + j, 5c + 7j + voice offset) mod 16, j = 0, 1. The voice offset (0, 4 for the training voices a, b;
    9 for the held-out voice c) only moves quantizer 1. Text -> speech is learnable only through the
    cross-attention (a unigram model cannot), and a voice is a constant shift that an initial state can hold."""
    from apps.lina_speech.table import Utterance, write_table

    gen = torch.Generator().manual_seed(seed)
    offsets = {"a": 0, "b": 4, "c": 9}
    utterances = []
    for s in range(n_sentences):
        chars = torch.randint(3, 12, (int(torch.randint(3, 7, (1,), generator=gen)),), generator=gen)
        split = "train" if s < n_sentences * 3 // 4 else ("val" if s % 2 else "test")
        for voice, offset in offsets.items():
            j = torch.arange(2)
            codes = torch.stack(
                [
                    ((3 * chars[:, None] + j) % CODEBOOK).flatten(),
                    ((5 * chars[:, None] + 7 * j + offset) % CODEBOOK).flatten(),
                ],
                dim=1,
            )
            text = "".join(chr(ord("a") + int(c)) for c in chars)
            utterances.append(
                Utterance(f"{voice}{s}", voice, str(s), ("ist_" if voice == "c" else "") + split, text, chars, codes)
            )
    meta = {"n_q": N_Q, "codebook_size": CODEBOOK, "frame_rate": 50.0, "sample_rate": 16000, "text_vocab": 12}
    write_table(out, meta, utterances)
    return out


@pytest.fixture(scope="session")
def table_dir(tmp_path_factory):
    return synthetic_table(tmp_path_factory.mktemp("lina_table"))

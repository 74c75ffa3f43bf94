"""predict: text file -> wav + spectrogram (+ codes); empty, unspeakable or unreadable text -> InputError.
The codec here is a test stand-in (each code a short tone) so that predict is tested without a trained codec."""

import numpy as np
import pytest
import torch

import apps.lina_speech.predict as predict_module
from apps.lina_speech.predict import MAX_CHARS, predict, read_text
from common.audio.io import load_audio
from common.audio.phonemes import PhonemeTokenizer, text_ids
from common.audio.text import CharTokenizer
from common.errors import InputError
from tests.apps.lina_speech.conftest import CODEBOOK, N_Q, tiny


class ToneCodec:
    """codes [B, frames, n_q] -> a tone per frame whose pitch is quantizer 0's code (160 samples a frame)."""

    sample_rate, hop = 8000, 160

    def decode(self, codes):
        t = torch.arange(self.hop) / self.sample_rate
        freqs = 200.0 + 50.0 * codes[0, :, 0].float()
        return torch.sin(2 * torch.pi * freqs[:, None] * t[None]).flatten()[None]


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "empty"), (b"  \n\t", "empty"), ("\U0001f600 \u4f60\u597d".encode(), "speakable"),
     (b"\xff\xfe\xfa", "cannot read"), (b"a" * (MAX_CHARS + 1), "characters")],
)  # fmt: skip
def test_bad_text_is_an_input_error(tmp_path, content, problem):
    path = tmp_path / "in.txt"
    path.write_bytes(content)
    with pytest.raises(InputError, match=problem):
        read_text(path)


def test_predict_writes_speech_and_spectrogram(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module, "load_model_codec", lambda model: ToneCodec())
    model = tiny(text_vocab=CharTokenizer().vocab_size).float()
    path = tmp_path / "in.txt"
    path.write_text("Dr. Smith paid $20 at 3 PM!")
    written = predict(model, path, tmp_path / "out", spec={})
    assert (tmp_path / "out" / "text.txt").read_text().startswith("doctor smith paid twenty dollars")
    codes = np.load(written["codes"])
    assert codes.ndim == 2 and codes.shape[1] == N_Q and 0 < len(codes) <= model.max_frames
    assert codes.max() < CODEBOOK
    wave = load_audio(written["wav"], ToneCodec.sample_rate)
    assert len(wave) == len(codes) * ToneCodec.hop
    assert written["spectrogram"].stat().st_size > 1000


def test_a_phoneme_model_is_given_the_phonemes_of_the_text(tmp_path, monkeypatch):
    monkeypatch.setattr(predict_module, "load_model_codec", lambda model: ToneCodec())
    model = tiny(text_vocab=PhonemeTokenizer().vocab_size, text_units="phonemes").float()
    seen, generate = [], model.generate
    monkeypatch.setattr(model, "generate", lambda ids, **kw: seen.append(ids) or generate(ids, **kw))
    predict(model, "Knight, one.", tmp_path / "out", spec={})
    assert seen[0][0].tolist() == text_ids("knight, one.", "phonemes") == text_ids("night, one.", "phonemes")

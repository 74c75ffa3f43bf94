"""espeak-ng phonemes as text units: they follow sound, not spelling; punctuation survives as its own marks; one
espeak-ng process for a batch gives each text its own phonemes."""

from __future__ import annotations

import pytest

from common.audio import phonemes
from common.audio.phonemes import PAUSES, PhonemeTokenizer, phonemize, text_ids
from common.audio.text import BOS, EOS, CharTokenizer
from common.errors import ManyheadsError


def test_homophones_share_phonemes_and_spelling_does_not_decide():
    knight, night, their, there = phonemize(["knight", "night", "their", "there"])
    assert knight == night and their == there
    assert knight != their


def test_punctuation_becomes_pause_marks_in_order():
    (said,) = phonemize(["yes, it is. is it? no!"])
    assert [c for c in said if c in PAUSES.values()] == ["|", ".", "[", "]"]


def test_a_batch_equals_texts_one_by_one():
    texts = ["a bird in the hand is worth two in the bush.", "hello, world", "one, two, three, four?"]
    assert phonemize(texts) == [phonemize([t])[0] for t in texts]


def test_ids_have_the_specials_and_the_space_of_the_char_tokenizer():
    ids = text_ids("in the bush.", "phonemes")
    assert ids[0] == BOS and ids[-1] == EOS
    assert PhonemeTokenizer().decode(ids) == phonemize(["in the bush."])[0]
    assert PhonemeTokenizer().encode(" ", bos=False, eos=False) == CharTokenizer().encode(" ", bos=False, eos=False)
    assert text_ids("in the bush.", "chars") == CharTokenizer().encode("in the bush.")


def test_missing_espeak_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(phonemes.shutil, "which", lambda name: None)
    with pytest.raises(ManyheadsError, match="espeak-ng"):  # the commands print it as one line, no trace
        phonemize(["hello"])

import pytest
import soundfile

from common.audio.speech import (
    CARD,
    MAX_CHARS,
    build_speech_corpus,
    fortune_sentences,
    read_corpus_info,
    read_manifest,
    voice_id,
)
from common.audio.text import normalize
from common.data.cache import build_once
from common.errors import DatasetError

VOICES, HELDOUT = ("flite:kal16", "espeak:en-us+f5"), ("flite:slt,int_f0_target_mean=200",)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """Three voices x seven sentences (3 train, 2 val, 2 test): shared by the audio tests, built once a session."""
    target = tmp_path_factory.getbasetemp() / "speech_corpus"
    return build_once(
        target, lambda d: build_speech_corpus(d, VOICES, HELDOUT, n_sentences=7, n_val=2, n_test=2, workers=1)
    )


def test_sentences_are_normalised_prose():
    sentences = fortune_sentences(("fortunes",))
    assert len(sentences) > 200
    assert all(normalize(s) == s and len(s) <= MAX_CHARS and s[-1] in ".?!" for s in sentences)


def test_manifest_splits_are_disjoint(corpus):
    info = read_corpus_info(corpus)
    utterances = read_manifest(corpus)
    assert len(utterances) == info["utterances"] == 3 * 7  # every voice reads every sentence (all are short)
    by_split = {s: read_manifest(corpus, s) for s in ("train", "val", "test", "ist_train", "ist_val", "ist_test")}
    assert sum(map(len, by_split.values())) == len(utterances)
    sentences = {s: {u.sentence_id for u in us} for s, us in by_split.items()}
    assert sentences["train"].isdisjoint(sentences["val"] | sentences["test"]) and sentences["val"] != sentences["test"]
    assert (len(sentences["train"]), len(sentences["val"]), len(sentences["test"])) == (3, 2, 2)
    assert {u.voice for s in ("train", "val", "test") for u in by_split[s]} == set(VOICES)
    assert {u.voice for s in ("ist_train", "ist_val", "ist_test") for u in by_split[s]} == set(HELDOUT)
    assert sentences["ist_test"] == sentences["test"]  # held-out voices are judged on the unseen sentences too


def test_utterances_are_speech_of_their_text(corpus):
    for u in read_manifest(corpus):
        wave, rate = soundfile.read(u.path)
        assert rate == 16000 and abs(len(wave) / rate - u.seconds) < 1e-3
        assert 0.5 < u.seconds <= 8.0 and 0.85 < abs(wave).max() < 0.95  # peak-normalised to 0.9
        assert u.text == normalize(u.text) and u.id == f"{voice_id(u.voice)}_{u.sentence_id}"


def test_missing_or_malformed_corpus_names_the_card(tmp_path):
    with pytest.raises(DatasetError, match=CARD):
        read_manifest(tmp_path)
    (tmp_path / "manifest.csv").write_text("id,voice\nx,y\n")
    with pytest.raises(DatasetError, match="manifest columns"):
        read_manifest(tmp_path)


def test_held_out_voices_can_read_only_the_first_sentences(tmp_path):
    """n_heldout_sentences: the held-out voice reads the first sentences of the order (test, val, then train), so a
    larger corpus keeps a smaller one's held-out-voice utterances (the order is a prefix: see the module)."""
    voices, heldout = ("espeak:en-us+f5",), ("espeak:en-us+f2",)  # espeak-ng: milliseconds an utterance
    corpus = build_speech_corpus(tmp_path, voices, heldout, 6, n_val=1, n_test=1, workers=1, n_heldout_sentences=3)
    utterances = read_manifest(corpus)
    train = [u for u in utterances if u.voice in voices]
    held = [u for u in utterances if u.voice in heldout]
    assert [u.split for u in train] == ["test", "val", "train", "train", "train", "train"]
    assert [(u.sentence_id, "ist_" + u.split) for u in train[:3]] == [(u.sentence_id, u.split) for u in held]
    assert read_corpus_info(corpus)["n_heldout_sentences"] == 3

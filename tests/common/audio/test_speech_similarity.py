import numpy as np
import pytest

from common.audio.io import load_audio
from common.audio.speech import read_manifest
from common.audio.speech_similarity import VoiceEmbedder
from common.errors import WeightsError
from tests.common.audio.test_speech import corpus  # noqa: F401 (the shared tiny corpus fixture)


@pytest.fixture(scope="module")
def embedder(corpus):  # noqa: F811
    train = read_manifest(corpus, "train")
    return VoiceEmbedder.fit([load_audio(u.path, 16000) for u in train], [u.voice for u in train], 16000)


def test_same_voice_scores_above_other_voices(corpus, embedder):  # noqa: F811
    # Unseen sentences of the two training voices and of the held-out voice (never fitted on): each utterance's
    # closest other utterance is of its own voice, and same-voice pairs score above different-voice pairs on average.
    unseen = [u for s in ("val", "test", "ist_val", "ist_test") for u in read_manifest(corpus, s)]
    waves = [load_audio(u.path, 16000) for u in unseen]
    units = np.stack([e / np.linalg.norm(e) for e in map(embedder.embed, waves)])
    scores = units @ units.T  # the cosines `similarity` returns, each wave embedded once
    same = np.array([[a.voice == b.voice for b in unseen] for a in unseen])
    np.fill_diagonal(scores, -np.inf)
    assert all(same[i, scores[i].argmax()] for i in range(len(unseen)))
    off_diagonal = ~np.eye(len(unseen), dtype=bool)
    assert scores[same & off_diagonal].mean() > scores[~same].mean() + 0.3
    i, j = np.argwhere(same & off_diagonal)[0]
    assert embedder.similarity(waves[i], waves[j]) == pytest.approx(scores[i, j])
    assert embedder.similarity(waves[0], waves[0]) == pytest.approx(1.0)


def test_profile_save_and_load(corpus, embedder, tmp_path):  # noqa: F811
    waves = [load_audio(u.path, 16000) for u in read_manifest(corpus, "ist_train")]
    loaded = VoiceEmbedder.load(embedder.save(tmp_path / "voices.safetensors"))
    assert loaded.similarity(waves[0], waves[1:]) == pytest.approx(embedder.similarity(waves[0], waves[1:]))
    (tmp_path / "bad.safetensors").write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="not a voice embedder"):
        VoiceEmbedder.load(tmp_path / "bad.safetensors")

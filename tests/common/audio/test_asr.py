import librosa
import pytest

from common.audio.asr import transcribe, word_error_rate
from common.audio.speech import synthesize

SENTENCE = "a journey of a thousand miles begins with a single step."
OTHER = "never put off till tomorrow what you can do today."


def test_word_error_rate_against_hand_count():
    references = ["The cat sat on the mat.", "Hello, world!"]
    hypotheses = ["the cat sat on mat", "hello there world"]
    # one deletion ('the') + one insertion ('there') over 6 + 2 reference words
    assert word_error_rate(references, hypotheses) == pytest.approx(2 / 8)
    assert word_error_rate(["It's 2 o'clock."], ["it's two o'clock"]) == 0.0  # both sides normalised
    with pytest.raises(ValueError, match="as many"):
        word_error_rate(["a b"], [])


# Bounds from the corpus-level rates on 30 held-out sentences (data_cards/espeak_fortunes_speech.md): flite voices
# 0.09-0.20, espeak-ng's en-us+f5 0.53. One clear 11-word sentence: flite within 0.3 (3 errors), espeak within 0.6.
# Scored against another sentence the same audio must be far off (> 0.8): the judge listens, it does not guess.
@pytest.mark.parametrize(("voice", "bound"), [("flite:kal16", 0.3), ("espeak:en-us+f5", 0.6)])
def test_pocketsphinx_understands_synthetic_speech(voice, bound):
    heard = transcribe(synthesize(voice, SENTENCE, 16000), 16000)
    assert word_error_rate([SENTENCE], [heard]) <= bound
    assert word_error_rate([OTHER], [heard]) > 0.8


def test_transcribe_resamples():
    wave = synthesize("flite:kal16", OTHER, 16000)
    at_22k = librosa.resample(wave, orig_sr=16000, target_sr=22050)
    assert word_error_rate([OTHER], [transcribe(at_22k, 22050)]) <= 0.3

"""The intelligibility judge: an offline recogniser the project did not write, and the word error rate.

API:
- `transcribe(wave, sample_rate) -> str`: pocketsphinx (PyPI `pocketsphinx`) with the US-English acoustic model,
  language model and dictionary its wheel ships (`en-us`, `en-us.lm.bin`, `cmudict-en-us.dict`), untouched: no
  corpus-specific grammar, so the judge knows nothing of the sentences it hears. Lower-case words.
- `transcribe_many(waves, sample_rate, workers=2) -> list[str]`: the same over processes.
- `word_error_rate(references, hypotheses) -> float`: corpus-level WER (total edits / total reference words) by
  torchmetrics' `word_error_rate`, both sides reduced to their normalised words (`common.audio.text.words`).

pocketsphinx recognises flite's voices well (WER about 0.1) and espeak-ng's formant voices badly (0.3 to 0.9):
report WER per voice or engine next to the ceilings of the same utterances, never one number across engines alone.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache

import librosa
import numpy as np
from torchmetrics.functional.text import word_error_rate as _wer

from common.audio.text import words

ASR_RATE = 16000  # the en-us acoustic model's rate


@lru_cache(maxsize=1)
def _decoder():
    from pocketsphinx import Decoder  # loads its 30 MB model: only when a judge is asked for

    return Decoder(samprate=ASR_RATE, logfn="/dev/null")


def transcribe(wave: np.ndarray, sample_rate: int) -> str:
    """What pocketsphinx hears in mono float `wave` ([T], in [-1, 1]) (it may hear a word or two in silence)."""
    wave = np.asarray(wave, dtype=np.float32).reshape(-1)
    if sample_rate != ASR_RATE:
        wave = librosa.resample(wave, orig_sr=sample_rate, target_sr=ASR_RATE)
    decoder = _decoder()
    decoder.start_utt()
    decoder.process_raw((np.clip(wave, -1, 1) * 32767).astype(np.int16).tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return words(hypothesis.hypstr) if hypothesis is not None else ""


def _transcribe_job(job) -> str:
    return transcribe(*job)


def transcribe_many(waves, sample_rate: int, workers: int = 2) -> list[str]:
    jobs = [(w, sample_rate) for w in waves]
    if workers <= 1:
        return [transcribe(*job) for job in jobs]
    with ProcessPoolExecutor(workers) as executor:
        return list(executor.map(_transcribe_job, jobs, chunksize=4))


def word_error_rate(references, hypotheses) -> float:
    """Corpus WER of `hypotheses` against `references` (normalised words on both sides)."""
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses) or not references:
        raise ValueError(f"{len(references)} references for {len(hypotheses)} hypotheses: expected as many, >= 1")
    return float(_wer([words(h) for h in hypotheses], [words(r) for r in references]))

"""The codec's reconstruction table: ASR word error rate and log-mel distance of original, vocoded and codec speech.

API:
- `log_mel_distance(codec, reference, other) -> float`: mean |log-mel difference| in dB over the codec's mel bands
  and the frames both waves have (the codec's STFT; amplitudes floored at its LOG_FLOOR).
- `mean_spectrum_baseline(codec, wave) -> wave`: the trivial reconstruction - the utterance's own average magnitude
  spectrum held constant over time (its timbre, none of its content), through the same Griffin-Lim.
- `evaluate_codec(codec, corpus_dir, split="test", per_voice=10, workers=2) -> list[dict]`: per voice, per engine
  and overall: WER of the original speech, of Griffin-Lim on the true magnitude (the vocoder's ceiling), of the
  codec's resynthesis, and the log-mel distances of the last two.
- CLI: `python -m common.audio.codec_eval --corpus DIR --codec DIR [--split test] [--per-voice 10]` prints the
  table as markdown (the one in data_cards/lina_codec.md).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from common.audio.asr import transcribe_many, word_error_rate
from common.audio.codec import Codec
from common.audio.io import load_audio
from common.audio.speech import read_manifest

DB = 20 / math.log(10)  # natural-log amplitude -> decibels


@torch.no_grad()
def log_mel_distance(codec: Codec, reference, other) -> float:
    a, _ = codec.log_spectra(codec._batch(reference))
    b, _ = codec.log_spectra(codec._batch(other))
    n = min(a.shape[-1], b.shape[-1])
    return float((a[..., :n] - b[..., :n]).abs().mean()) * DB


@torch.no_grad()
def mean_spectrum_baseline(codec: Codec, wave) -> np.ndarray:
    _, log_magnitude = codec.log_spectra(codec._batch(wave))
    constant = log_magnitude.exp().mean(-1, keepdim=True).log().expand_as(log_magnitude)
    return codec.spectrum_to_wave(constant)[0].cpu().numpy()


@torch.no_grad()
def _resyntheses(codec: Codec, wave: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Griffin-Lim of the true magnitude, codec decode of the codec's codes) of one wave."""
    _, log_magnitude = codec.log_spectra(codec._batch(wave))
    vocoded = codec.spectrum_to_wave(log_magnitude)[0]
    coded = codec.decode(codec.encode(wave))[0]
    return vocoded.cpu().numpy(), coded.cpu().numpy()


def _row(name: str, items: list[dict]) -> dict:
    texts = [i["text"] for i in items]
    return {
        "voice": name,
        "utterances": len(items),
        "wer_original": word_error_rate(texts, [i["original"] for i in items]),
        "wer_vocoded": word_error_rate(texts, [i["vocoded"] for i in items]),
        "wer_codec": word_error_rate(texts, [i["codec"] for i in items]),
        "mel_db_vocoded": float(np.mean([i["mel_vocoded"] for i in items])),
        "mel_db_codec": float(np.mean([i["mel_codec"] for i in items])),
    }


def evaluate_codec(codec: Codec, corpus_dir, split: str = "test", per_voice: int = 10, workers: int = 2) -> list[dict]:
    """Rows per voice, then per engine ('flite', 'espeak'), then 'all' (see the module docstring)."""
    utterances = read_manifest(corpus_dir, split)
    voices = sorted({u.voice for u in utterances})
    chosen = [u for v in voices for u in [u for u in utterances if u.voice == v][:per_voice]]
    items, waves = [], {"original": [], "vocoded": [], "codec": []}
    for u in chosen:
        wave = load_audio(u.path, codec.sample_rate, card="espeak_fortunes_speech")
        vocoded, coded = _resyntheses(codec, wave)
        waves["original"].append(wave)
        waves["vocoded"].append(vocoded)
        waves["codec"].append(coded)
        items.append({"voice": u.voice, "text": u.text, "mel_vocoded": log_mel_distance(codec, wave, vocoded),
                      "mel_codec": log_mel_distance(codec, wave, coded)})  # fmt: skip
    for kind, kind_waves in waves.items():
        for item, hypothesis in zip(items, transcribe_many(kind_waves, codec.sample_rate, workers), strict=True):
            item[kind] = hypothesis
    rows = [_row(v, [i for i in items if i["voice"] == v]) for v in voices]
    engines = sorted({v.split(":")[0] for v in voices})
    rows += [_row(e, [i for i in items if i["voice"].startswith(e + ":")]) for e in engines]
    return [*rows, _row("all", items)]


def markdown(rows: list[dict]) -> str:
    lines = [
        "| voice | utterances | WER original | WER Griffin-Lim (true magnitude) | WER codec | log-mel dB Griffin-Lim"
        " | log-mel dB codec |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['voice']} | {r['utterances']} | {r['wer_original']:.3f} | {r['wer_vocoded']:.3f} | "
            f"{r['wer_codec']:.3f} | {r['mel_db_vocoded']:.2f} | {r['mel_db_codec']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    from common.audio.codec_train import load_codec

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--codec", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--per-voice", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    rows = evaluate_codec(load_codec(args.codec), args.corpus, args.split, args.per_voice, args.workers)
    print(markdown(rows))


if __name__ == "__main__":
    main()

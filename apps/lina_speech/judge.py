"""Judge a trained Lina-Speech with tools the project did not write: pocketsphinx WER, and voice similarity.

For held-out test sentences: the WER of the generated speech (zero initial state), next to its two ceilings on
the same sentences: the original synthetic recordings and their codec resynthesis (decode(encode(wave))), per
voice engine (pocketsphinx hears flite far better than espeak-ng). Then initial-state tuning on a held-out voice
(its `ist_train` utterances): similarity of speech generated for its `ist_test` sentences to its own recordings,
untuned vs tuned, and the tuned speech's WER. Writes a JSON of everything.

    python -m apps.lina_speech.judge --export exports/lina_speech --out judge.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from apps.lina_speech.data import LinaSpeechDataModule
from apps.lina_speech.ist import tune_voice
from apps.lina_speech.predict import load_model_codec, synthesize
from common.audio.asr import transcribe_many, word_error_rate
from common.audio.io import load_audio


def _engine(voice: str) -> str:
    return voice.split(":")[0]


def wer_table(model, codec, corpus_utts, n_sentences: int, seed: int) -> dict:
    """WER of generated / original / codec-resynthesised speech of the first test sentences, per engine."""
    sentences = sorted({u.text for u in corpus_utts if u.split == "test"})[:n_sentences]
    gen = torch.Generator().manual_seed(seed)
    generated = [synthesize(model, text, codec, generator=gen)[0] for text in sentences]
    rate = codec.sample_rate
    result = {"sentences": len(sentences), "generated": word_error_rate(sentences, transcribe_many(generated, rate))}
    for engine in sorted({_engine(u.voice) for u in corpus_utts}):
        recordings = {u.text: u for u in corpus_utts if u.split == "test" and _engine(u.voice) == engine}
        texts = [t for t in sentences if t in recordings]
        originals = [load_audio(recordings[t].path, rate) for t in texts]
        with torch.no_grad():
            resynth = [np.asarray(codec.decode(codec.encode(torch.from_numpy(w))), np.float32).reshape(-1)
                       for w in originals]  # fmt: skip
        result[f"original_{engine}"] = word_error_rate(texts, transcribe_many(originals, rate))
        result[f"codec_{engine}"] = word_error_rate(texts, transcribe_many(resynth, rate))
    return result


def voice_embedder(corpus_utts, rate: int, per_voice: int = 40):
    """`common.audio.speech_similarity.VoiceEmbedder` (MFCC statistics + WCCN) fitted on the training voices."""
    from common.audio.speech_similarity import VoiceEmbedder

    train = [u for u in corpus_utts if u.split == "train"]
    chosen = [u for v in sorted({u.voice for u in train}) for u in [t for t in train if t.voice == v][:per_voice]]
    return VoiceEmbedder.fit([load_audio(u.path, rate) for u in chosen], [u.voice for u in chosen], rate)


def ist_table(model, codec, dm, corpus_utts, voice: str, n_sentences: int, steps: int, seed: int) -> dict:
    """Similarity of generated test sentences to a held-out voice's recordings (its voice profile over all its
    ist_test recordings), untuned vs tuned, and their WER."""
    tune = dm.loader(dm.utterances("ist_train", voice), shuffle=True, batch_size=2)
    start = time.perf_counter()
    tuned, losses = tune_voice(model, tune, steps=steps, seed=seed)
    seconds = time.perf_counter() - start
    refs = [u for u in corpus_utts if u.voice == voice and u.split == "ist_test"][:n_sentences]
    rate = codec.sample_rate
    embedder = voice_embedder(corpus_utts, rate)
    recordings = [load_audio(u.path, rate) for u in refs]
    out = {"voice": voice, "ist_steps": steps, "ist_seconds": seconds, "ist_loss": [losses[0], losses[-1]]}
    for name, states in (("untuned", None), ("tuned", tuned)):
        gen = torch.Generator().manual_seed(seed)
        waves = [synthesize(model, u.text, codec, states, gen)[0] for u in refs]
        out[f"similarity_{name}"] = float(np.mean([embedder.similarity(w, recordings) for w in waves if len(w)]))
        out[f"wer_{name}"] = word_error_rate([u.text for u in refs], transcribe_many(waves, rate))
    return out


def main(argv: list[str] | None = None) -> None:
    from apps.lina_speech.embedded import corpus_of, tokens_of
    from common.audio.speech import read_manifest
    from common.pipeline.export import load

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--export", required=True)
    parser.add_argument("--sentences", type=int, default=20)
    parser.add_argument("--voice", default=None, help="held-out voice for IST (default: the first)")
    parser.add_argument("--ist-steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    model = load(args.export)
    codec = load_model_codec(model)
    dm = LinaSpeechDataModule(source="tokens", root=str(tokens_of(model.codec_dir)))
    dm.setup("fit")
    corpus_utts = read_manifest(corpus_of(model.codec_dir))
    result = {"wer": wer_table(model, codec, corpus_utts, args.sentences, args.seed)}
    print(json.dumps(result), flush=True)
    voice = args.voice or dm.table.voices("ist_train")[0]
    result["ist"] = ist_table(model, codec, dm, corpus_utts, voice, args.sentences, args.ist_steps, args.seed)
    print(json.dumps(result["ist"]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()

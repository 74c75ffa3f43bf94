"""The embedded dataset, built once each into `data_dir`: speech corpus -> codec -> token table.

    corpus-<hash>/   common.audio.speech.build_speech_corpus (espeak-ng + flite voices reading fortunes)
    codec-<hash>/    common.audio.codec_train.train_codec on that corpus (the first `make train` trains it)
    tokens-<hash>/   every utterance encoded by the codec, with its text ids (table.py)

Each folder's name carries a hash of the options that made it (and of the folders it was made from), so a
changed option builds a new folder instead of reusing a stale one; `build_once` makes each atomic. The codec
folder also names its corpus (`lina_corpus.json`), so that a model, which knows its codec folder, finds its
corpus and token table again (`corpus_of`, `tokens_of`: initial-state tuning and the judge use them).

`codec_corpus` (options of another corpus) trains the codec on that corpus instead, and encodes this one with it:
a larger corpus keeps the default corpus's codec (and so its reconstruction ceilings); its token table is then
`tokens-<hash of codec and corpus>`. With the val, test and held-out-voice utterances of the codec's corpus kept
(a larger `n_sentences`, `n_heldout_sentences` = the smaller corpus's), `corpus_of` and `tokens_of` of the codec
still serve the judge and initial-state tuning.

    python -m apps.lina_speech.embedded --data-dir data/lina_speech n_sentences=4000 n_heldout_sentences=300
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from apps.lina_speech.table import Utterance, write_table
from common.audio.io import load_audio
from common.audio.speech import build_speech_corpus, read_manifest
from common.audio.text import CharTokenizer
from common.data.cache import build_once

CORPUS_LINK = "lina_corpus.json"


def _tag(name: str, *parts) -> str:
    digest = hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{name}-{digest}"


def encode_corpus(corpus_dir: Path, codec_dir: Path, out: Path) -> None:
    """Write the token table of every utterance of the corpus through the codec."""
    from common.audio.codec_train import load_codec

    codec = load_codec(codec_dir)
    tokenizer = CharTokenizer()
    rows = []
    with torch.no_grad():
        for u in read_manifest(corpus_dir):
            wave = torch.from_numpy(load_audio(u.path, codec.sample_rate))
            codes = codec.encode(wave)[0].long()  # [frames, n_q]
            ids = torch.tensor(tokenizer.encode(u.text))
            rows.append(Utterance(u.id, u.voice, u.sentence_id, u.split, u.text, ids, codes))
    meta = {
        "n_q": codec.n_q,
        "codebook_size": codec.codebook_size,
        "frame_rate": codec.frame_rate,
        "sample_rate": codec.sample_rate,
        "text_vocab": tokenizer.vocab_size,
    }
    write_table(out, meta, rows)


def _corpus_tag(options: dict) -> str:
    return _tag("corpus", {k: v for k, v in options.items() if k != "workers"})  # workers do not change the corpus


def corpus_of(codec_dir: str | Path) -> Path:
    codec_dir = Path(codec_dir)
    return codec_dir.parent / json.loads((codec_dir / CORPUS_LINK).read_text())["corpus"]


def tokens_of(codec_dir: str | Path) -> Path:
    return Path(codec_dir).parent / _tag("tokens", Path(codec_dir).name)


def build_embedded(
    data_dir: Path, corpus_options: dict, codec_options: dict, codec_corpus: dict | None = None
) -> dict[str, Path]:
    """The corpus, codec and token-table folders under `data_dir`, each built once (`codec_corpus`: see above)."""
    from common.audio.codec_train import train_codec

    def corpus_dir(options: dict) -> Path:
        return build_once(data_dir / _corpus_tag(options), lambda out: build_speech_corpus(out, **options))

    def build_codec(out: Path) -> None:
        train_codec(codec_source, out, **codec_options)
        (out / CORPUS_LINK).write_text(json.dumps({"corpus": codec_source.name}) + "\n")

    data_dir = Path(data_dir)
    corpus = corpus_dir(corpus_options)
    codec_source = corpus if codec_corpus is None else corpus_dir(codec_corpus)
    codec = build_once(data_dir / _tag("codec", codec_source.name, codec_options), build_codec)
    table = tokens_of(codec) if codec_source == corpus else data_dir / _tag("tokens", codec.name, corpus.name)
    tokens = build_once(table, lambda out: encode_corpus(corpus, codec, out))
    return {"corpus": corpus, "codec": codec, "tokens": tokens}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build a corpus and its token table through the default codec.")
    parser.add_argument("--data-dir", default="data/lina_speech")
    parser.add_argument("options", nargs="*", help="corpus options as key=value (integers), e.g. n_sentences=4000")
    args = parser.parse_args(argv)
    options = {k: int(v) for k, v in (o.split("=", 1) for o in args.options)}
    print(json.dumps({k: str(v) for k, v in build_embedded(Path(args.data_dir), options, {}, {}).items()}))


if __name__ == "__main__":
    main()

"""The token table: every utterance of a corpus as text ids and codec codes, the language model's whole dataset.

On disk, one folder: `table.json` (format version, n_q, codebook_size, frame_rate, sample_rate, text_vocab, and per
utterance: id, voice, sentence, split, text, text_ids, frames) and `codes.npy` (all utterances' codes concatenated
along time, [sum of frames, n_q], uint8 for codebooks of up to 256 entries else int32 (any integer type is read),
in the order of `table.json`). Splits (the corpus's, `common.audio.speech`): train, val (held-out sentences of the
training voices, for model selection), test (other held-out sentences); ist_train, ist_val, ist_test: the same
sentence splits read by held-out voices, for initial-state tuning (on ist_train) and its judgement (on ist_test).

`read_token_folder` reads the other layout, a `common.audio.codec_tokens` folder (tokens.json + one npz per
utterance), with the texts, voices and splits of the speech corpus it encodes (its manifest.csv).
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from common.audio.codec_tokens import read_token_info, read_tokens
from common.audio.phonemes import PhonemeTokenizer, phonemize
from common.audio.speech import read_corpus_info, read_manifest
from common.audio.text import CharTokenizer
from common.errors import DatasetError
from common.utils.files import write_json

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test", "ist_train", "ist_val", "ist_test")
META_KEYS = ("n_q", "codebook_size", "frame_rate", "sample_rate", "text_vocab")
EXPECTED = (
    "a token table folder: table.json (version, n_q, codebook_size, frame_rate, sample_rate, text_vocab, "
    "utterances with id, voice, sentence, split, text, text_ids, frames) and codes.npy [sum frames, n_q] int"
)
PHONEMES = "phonemes.json"  # beside table.json: {normalised text: its phonemes}, written by `use_phonemes`


@dataclass
class Utterance:
    id: str
    voice: str
    sentence: str
    split: str
    text: str
    text_ids: torch.Tensor  # [S] int64
    codes: torch.Tensor  # [frames, n_q] int64


@dataclass
class TokenTable:
    meta: dict
    utterances: list[Utterance]

    def split(self, name: str, voice: str | None = None) -> list[Utterance]:
        return [u for u in self.utterances if u.split == name and (voice is None or u.voice == voice)]

    def voices(self, split: str) -> list[str]:
        return sorted({u.voice for u in self.utterances if u.split == split})


def write_table(out: Path, meta: dict, utterances: list[Utterance]) -> None:
    rows = [
        {
            "id": u.id,
            "voice": u.voice,
            "sentence": u.sentence,
            "split": u.split,
            "text": u.text,
            "text_ids": u.text_ids.tolist(),
            "frames": int(u.codes.shape[0]),
        }
        for u in utterances
    ]
    dtype = np.uint8 if meta["codebook_size"] <= 256 else np.int32  # 4x smaller tables for the device's carry
    codes = np.concatenate([u.codes.numpy().astype(dtype) for u in utterances])
    np.save(out / "codes.npy", codes, allow_pickle=False)
    (out / "table.json").write_text(json.dumps({"version": FORMAT_VERSION, **meta, "utterances": rows}) + "\n")


def read_table(folder: Path, card: str | None = None) -> TokenTable:
    """Read a token table folder; anything malformed raises DatasetError naming the file."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "table.json").read_text())
        codes = np.load(folder / "codes.npy", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise DatasetError(folder, EXPECTED, card=card, problem=str(e)) from e
    missing = [k for k in ("version", *META_KEYS, "utterances") if k not in info]
    frames = [int(r.get("frames", -1)) for r in info.get("utterances", [])]
    problem = None
    if missing:
        problem = f"table.json lacks {missing}"
    elif codes.ndim != 2 or codes.shape[1] != info["n_q"] or sum(frames) != codes.shape[0]:
        problem = f"codes.npy has shape {codes.shape}; table.json says {sum(frames)} frames of {info['n_q']}"
    elif codes.size and (codes.min() < 0 or codes.max() >= info["codebook_size"]):
        problem = f"codes outside 0..{info['codebook_size'] - 1}"
    elif any(r.get("split") not in SPLITS for r in info["utterances"]):
        problem = f"a split outside {SPLITS}"
    if problem:
        raise DatasetError(folder, EXPECTED, card=card, problem=problem)
    codes = torch.from_numpy(codes.astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(frames)])
    utterances = [
        Utterance(
            r["id"], r["voice"], str(r["sentence"]), r["split"], r["text"], torch.tensor(r["text_ids"]), codes[a:b]
        )
        for r, a, b in zip(info["utterances"], starts[:-1], starts[1:])
    ]
    return TokenTable({k: info[k] for k in META_KEYS}, utterances)


def read_token_folder(folder: Path, corpus_dir: Path) -> TokenTable:
    """The token table of a `common.audio.codec_tokens` folder: an utterance per row of the corpus manifest,
    its codes from `<id>.npz`, its text tokenised by `CharTokenizer`; problems raise DatasetError."""
    info, tokenizer = read_token_info(folder), CharTokenizer()
    utterances = [
        Utterance(
            u.id,
            u.voice,
            u.sentence_id,
            u.split,
            u.text,
            torch.tensor(tokenizer.encode(u.text)),
            torch.from_numpy(read_tokens(folder, u.id, info)),
        )
        for u in read_manifest(corpus_dir)
    ]
    meta = {"n_q": info.n_q, "codebook_size": info.codebook_size, "frame_rate": info.frame_rate}
    meta |= {"sample_rate": read_corpus_info(corpus_dir)["sample_rate"], "text_vocab": tokenizer.vocab_size}
    return TokenTable(meta, utterances)


def use_phonemes(table: TokenTable, folder: Path, card: str) -> None:
    """Every utterance's text ids as phonemes (`common.audio.phonemes`), in place. The phonemes of a text come from
    `folder/phonemes.json` where it holds them (a GPU machine has no espeak-ng: the file travels with the table),
    else from espeak-ng, and are then written there (skipped for a read-only folder)."""
    path, expected = folder / PHONEMES, "a JSON object {normalised text: espeak-ng phonemes}, written by the app"
    known = {}
    if path.is_file():
        try:
            known = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DatasetError(path, expected, card=card, problem=f"unreadable ({type(e).__name__})") from None
        if not isinstance(known, dict) or not all(isinstance(v, str) for v in known.values()):
            raise DatasetError(path, expected, card=card, problem="not an object of strings")
    missing = sorted({u.text for u in table.utterances} - known.keys())
    if missing:
        known |= dict(zip(missing, phonemize(missing)))
        with contextlib.suppress(OSError):  # a read-only table folder: phonemized again next time
            write_json(path, known)
    tokenizer = PhonemeTokenizer()
    for u in table.utterances:
        try:
            u.text_ids = torch.tensor(tokenizer.encode(known[u.text]))
        except ValueError as e:
            raise DatasetError(path, expected, card=card, problem=f"the phonemes of {u.text!r}: {e}") from None
    table.meta["text_vocab"] = tokenizer.vocab_size

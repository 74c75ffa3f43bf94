"""Codec tokens on disk: what the language model reads, whichever codec made them (`model.codec=<token folder>`).

Format of a token folder:
- `tokens.json`: {"frame_rate": token steps per second (float), "n_q": codebooks per step (int),
  "codebook_size": codes per codebook (int), "codec": free text naming the codec}, all but "codec" required;
- `<utterance id>.npz`, one per utterance of the corpus manifest: the array `codes`, integers of shape
  [frames, n_q] in [0, codebook_size) (int16 is enough up to 32768 codes; any integer dtype is read).

API:
- `TokenInfo(frame_rate, n_q, codebook_size, codec)`; `read_token_info(folder) -> TokenInfo`;
- `read_tokens(folder, utterance_id, info) -> np.ndarray [frames, n_q] int64`;
- `write_tokens(folder, utterance_id, codes)`, `write_token_info(folder, info)`;
- `encode_corpus(codec, corpus_dir, folder, batch_size=16) -> TokenInfo`: the tokens of every utterance.
Every problem is a `DatasetError` naming the file, what was expected, and the codec card `data_cards/lina_codec.md`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from common.audio.io import load_audio
from common.audio.speech import read_manifest
from common.errors import DatasetError

CARD = "lina_codec"
INFO = "tokens.json"
EXPECTED_INFO = f"{INFO} with frame_rate (float > 0), n_q (int >= 1), codebook_size (int >= 1) and codec (text)"
EXPECTED_CODES = "an .npz holding 'codes': integers [frames, n_q] in [0, codebook_size)"


@dataclass(frozen=True)
class TokenInfo:
    frame_rate: float
    n_q: int
    codebook_size: int
    codec: str = ""


def write_token_info(folder: str | Path, info: TokenInfo) -> None:
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / INFO).write_text(json.dumps(asdict(info), indent=1))


def read_token_info(folder: str | Path) -> TokenInfo:
    path = Path(folder) / INFO
    if not path.is_file():
        raise DatasetError(path, EXPECTED_INFO, CARD, "token folder has no tokens.json")
    try:
        raw = json.loads(path.read_text())
        info = TokenInfo(float(raw["frame_rate"]), raw["n_q"], raw["codebook_size"], str(raw.get("codec", "")))
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetError(path, EXPECTED_INFO, CARD, f"malformed tokens.json ({type(exc).__name__}: {exc})") from None
    integers = all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (info.n_q, info.codebook_size))
    if not integers or info.frame_rate <= 0:
        raise DatasetError(path, EXPECTED_INFO, CARD, f"bad values in tokens.json: {raw}")
    return info


def write_tokens(folder: str | Path, utterance_id: str, codes) -> Path:
    path = Path(folder) / f"{utterance_id}.npz"
    np.savez(path, codes=np.asarray(codes, dtype=np.int16))
    return path


def read_tokens(folder: str | Path, utterance_id: str, info: TokenInfo) -> np.ndarray:
    """The codes [frames, n_q] int64 of one utterance, checked against `info`."""
    path = Path(folder) / f"{utterance_id}.npz"
    if not path.is_file():
        raise DatasetError(path, EXPECTED_CODES, CARD, "token file not found")
    try:
        with np.load(path, allow_pickle=False) as data:
            codes = data["codes"]
    except KeyError:
        raise DatasetError(path, EXPECTED_CODES, CARD, "no array named 'codes'") from None
    except Exception as exc:  # zipfile and numpy raise several types for truncated or foreign files
        raise DatasetError(path, EXPECTED_CODES, CARD, f"unreadable npz ({type(exc).__name__}: {exc})") from None
    if not np.issubdtype(codes.dtype, np.integer):
        raise DatasetError(path, EXPECTED_CODES, CARD, f"codes of dtype {codes.dtype}")
    if codes.ndim != 2 or codes.shape[1] != info.n_q or codes.shape[0] == 0:
        raise DatasetError(path, EXPECTED_CODES, CARD, f"codes of shape {codes.shape}, n_q is {info.n_q}")
    if codes.min() < 0 or codes.max() >= info.codebook_size:
        problem = f"codes in [{codes.min()}, {codes.max()}], codebook_size is {info.codebook_size}"
        raise DatasetError(path, EXPECTED_CODES, CARD, problem)
    return codes.astype(np.int64)


@torch.no_grad()
def encode_corpus(codec, corpus_dir: str | Path, folder: str | Path, batch_size: int = 16) -> TokenInfo:
    """Write the tokens of every utterance of the corpus; utterances are batched by length to pad little."""
    info = TokenInfo(codec.frame_rate, codec.n_q, codec.codebook_size, f"common.audio.codec.Codec {codec.config}")
    write_token_info(folder, info)
    utterances = sorted(read_manifest(corpus_dir), key=lambda u: u.seconds)
    for start in range(0, len(utterances), batch_size):
        chunk = utterances[start : start + batch_size]
        waves = [load_audio(u.path, codec.sample_rate, card="espeak_fortunes_speech") for u in chunk]
        batch = np.zeros((len(waves), max(map(len, waves))), np.float32)
        for row, wave in zip(batch, waves, strict=True):
            row[: len(wave)] = wave
        codes = codec.encode(batch).cpu().numpy()
        for u, wave, c in zip(chunk, waves, codes, strict=True):
            write_tokens(folder, u.id, c[: codec.frames_of(len(wave))])
    return info

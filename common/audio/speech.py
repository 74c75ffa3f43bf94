"""The embedded speech corpus: sentences of Debian `fortunes` read by espeak-ng and flite voices, offline.

API:
- `build_speech_corpus(out_dir, voices=TRAIN_VOICES, heldout_voices=HELDOUT_VOICES, n_sentences=300, n_val=20,
  n_test=30, sample_rate=16000, max_seconds=8.0, seed=0, workers=2, n_heldout_sentences=None) -> Path`: writes
  `out_dir/wav/<voice>/<sentence id>.wav`, `manifest.csv` and `corpus.json`; wrap it in
  `common.data.cache.build_once` to build it once.
- `read_manifest(corpus_dir, split=None) -> list[Utterance]` (`DatasetError` naming the card on a missing or
  malformed corpus); `Utterance`: id, voice, sentence_id, text, path (absolute), seconds, split.
- `fortune_sentences(files=FORTUNE_FILES) -> list[str]`: the normalised candidate sentences, sorted.
- `synthesize(voice, text, sample_rate) -> [T] float32`: one utterance of a voice spec (`espeak:<voice>[+variant]`
  or `flite:<voice>[,feature=value...]`, features passed to flite as `--setf`).

Splits: sentences are drawn once by a seeded permutation: the first `n_test` are `test`, the next `n_val` `val`,
the rest `train`, so a larger `n_sentences` keeps the same val and test sentences. Training voices read every
sentence (splits `train`, `val`, `test`); held-out voices read them too, under `ist_train`, `ist_val`, `ist_test`:
a voice never heard in training, for initial-state tuning on `ist_train` and its judgement on unseen sentences.
`n_heldout_sentences` limits the held-out voices to the first sentences of the order (test and val ones first):
a large corpus then keeps the held-out voices' utterances of a smaller one (IST needs minutes, not hours).
Utterances longer than `max_seconds` are left out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import subprocess
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.audio.io import load_audio, write_wav
from common.audio.text import normalize
from common.errors import DatasetError

CARD = "espeak_fortunes_speech"
FORTUNES = Path("/usr/share/games/fortunes")
# The neutral topics of Debian's (non-offensive) `fortunes` package.
FORTUNE_FILES = ("art", "computers", "cookie", "definitions", "education", "food", "fortunes", "humorists", "kids",
                 "literature", "miscellaneous", "people", "platitudes", "science", "songs-poems", "sports", "wisdom",
                 "work")  # fmt: skip
# Voices chosen for distinct timbres that pocketsphinx still understands (flite's clustergen and diphone voices and
# the espeak-ng variants with the lowest WER on a probe of five sentences; most espeak variants are above 0.6).
TRAIN_VOICES = (
    "flite:awb", "flite:kal16", "flite:slt", "espeak:en-us+f5", "espeak:en-us+edward", "espeak:en-us+klatt2"
)  # fmt: skip
HELDOUT_VOICES = ("flite:rms", "espeak:en-us+f2")
SPLITS = ("train", "val", "test", "ist_train", "ist_val", "ist_test")
MANIFEST_FIELDS = ("id", "voice", "sentence_id", "text", "path", "seconds", "split")
EXPECTED = "a corpus folder with manifest.csv (" + ",".join(MANIFEST_FIELDS) + ") and the wav files it names"
MIN_WORDS, MAX_WORDS, MAX_CHARS = 4, 16, 100
TRIM_DB, PAD_SECONDS, PEAK = 40, 0.05, 0.9


@dataclass(frozen=True)
class Utterance:
    id: str
    voice: str
    sentence_id: str
    text: str
    path: Path
    seconds: float
    split: str


def voice_id(voice: str) -> str:
    """A file-name-safe id of a voice spec: 'flite:slt,int_f0_target_mean=220' -> 'flite-slt-int_f0_target_mean220'."""
    return re.sub(r"[^a-zA-Z0-9_]+", "-", voice.replace("=", "")).strip("-")


def sentence_id(text: str) -> str:
    return "s" + hashlib.sha1(text.encode()).hexdigest()[:10]


def _speakable(sentence: str) -> bool:
    """A sentence both engines read as written: plain ASCII prose, no acronyms (spelt or not), no markup."""
    return (
        sentence.isascii()
        and sentence.endswith((".", "?", "!"))
        and not re.search(r"[@#<>\[\]{}|\\/_=*^~:;()\"]|http|\b[A-Z]{2,}\b", sentence)
    )


def fortune_sentences(files=FORTUNE_FILES) -> list[str]:
    """The normalised sentences of the fortunes `files` with MIN_WORDS..MAX_WORDS words (attributions dropped)."""
    sentences = set()
    for name in files:
        path = FORTUNES / name
        if not path.is_file():
            raise DatasetError(path, "the Debian package fortunes' text files (apt-get install fortunes)", CARD)
        for entry in path.read_text(errors="replace").split("\n%\n"):
            body = " ".join(line.strip() for line in entry.splitlines() if not line.strip().startswith("--"))
            for sentence in re.split(r"(?<=[.?!])\s+(?=[A-Z])", body):
                text = normalize(sentence) if _speakable(sentence) else ""
                if MIN_WORDS <= len(text.split()) <= MAX_WORDS and len(text) <= MAX_CHARS:
                    sentences.add(text)
    return sorted(sentences)


def _command(voice: str, text: str, wav: Path) -> list[str]:
    engine, _, name = voice.partition(":")
    if engine == "espeak":
        return ["espeak-ng", "-v", name, "-w", str(wav), text]
    if engine == "flite":
        name, *features = name.split(",")
        return ["flite", "-voice", name, *[a for f in features for a in ("--setf", f)], "-t", text, "-o", str(wav)]
    raise ValueError(f"voice {voice!r}: expected 'espeak:<voice>' or 'flite:<voice>[,feature=value...]'")


def _trim(wave: np.ndarray, frame: int = 256) -> np.ndarray:
    """`wave` without the leading and trailing frames quieter than TRIM_DB below its loudest frame."""
    n = max(len(wave) // frame, 1)
    rms = np.sqrt(np.mean(np.square(wave[: n * frame].reshape(n, -1)), axis=1) + 1e-12)
    loud = np.flatnonzero(20 * np.log10(rms / rms.max()) > -TRIM_DB)
    return wave[loud[0] * frame : (loud[-1] + 1) * frame]


def synthesize(voice: str, text: str, sample_rate: int) -> np.ndarray:
    """[T] float32 speech of `text`: silences trimmed to PAD_SECONDS each side, peak at PEAK."""
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "out.wav"
        subprocess.run(_command(voice, text, wav), check=True, capture_output=True, timeout=60)
        wave = load_audio(wav, sample_rate)
    wave = _trim(wave)
    pad = np.zeros(int(PAD_SECONDS * sample_rate), np.float32)
    return np.concatenate([pad, wave / max(float(np.abs(wave).max()), 1e-6) * PEAK, pad]).astype(np.float32)


def _render(job) -> float:
    voice, text, path, sample_rate = job
    wave = synthesize(voice, text, sample_rate)
    write_wav(path, wave, sample_rate)
    return len(wave) / sample_rate


def build_speech_corpus(
    out_dir: str | Path,
    voices=TRAIN_VOICES,
    heldout_voices=HELDOUT_VOICES,
    n_sentences: int = 300,
    n_val: int = 20,
    n_test: int = 30,
    sample_rate: int = 16000,
    max_seconds: float = 8.0,
    seed: int = 0,
    workers: int = 2,
    n_heldout_sentences: int | None = None,
) -> Path:
    """Synthesise every (voice, sentence) pair into `out_dir` with its manifest (see the module docstring)."""
    out_dir = Path(out_dir)
    pool = fortune_sentences()
    if n_val + n_test >= n_sentences or n_sentences > len(pool):
        raise ValueError(f"n_sentences={n_sentences} must exceed n_val + n_test and be at most {len(pool)}")
    order = np.random.default_rng(seed).permutation(len(pool))[:n_sentences]
    chosen = [pool[i] for i in order]
    sentence_split = ["test"] * n_test + ["val"] * n_val + ["train"] * (n_sentences - n_val - n_test)
    pairs, rows, jobs = list(zip(chosen, sentence_split, strict=True)), [], []
    for voice in (*voices, *heldout_voices):
        heldout = voice in heldout_voices
        prefix = "ist_" if heldout else ""
        for text, split in pairs[:n_heldout_sentences] if heldout else pairs:
            sid, vid = sentence_id(text), voice_id(voice)
            rel = Path("wav") / vid / f"{sid}.wav"
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            rows.append({"id": f"{vid}_{sid}", "voice": voice, "sentence_id": sid, "text": text, "path": str(rel),
                         "split": prefix + split})  # fmt: skip
            jobs.append((voice, text, out_dir / rel, sample_rate))
    if workers > 1:
        with ProcessPoolExecutor(workers) as executor:
            seconds = list(executor.map(_render, jobs, chunksize=16))
    else:
        seconds = [_render(job) for job in jobs]
    kept = []
    for row, length in zip(rows, seconds, strict=True):
        if length <= max_seconds:
            kept.append({**row, "seconds": f"{length:.3f}"})
        else:
            (out_dir / row["path"]).unlink()
    with open(out_dir / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(kept)
    meta = {"sample_rate": sample_rate, "voices": list(voices), "heldout_voices": list(heldout_voices),
            "n_sentences": n_sentences, "n_val": n_val, "n_test": n_test, "n_heldout_sentences": n_heldout_sentences,
            "max_seconds": max_seconds, "seed": seed,
            "utterances": len(kept), "hours": round(sum(float(r["seconds"]) for r in kept) / 3600, 3)}  # fmt: skip
    (out_dir / "corpus.json").write_text(json.dumps(meta, indent=1))
    return out_dir


def read_corpus_info(corpus_dir: str | Path) -> dict:
    """The corpus's `corpus.json` (sample rate, voices, sizes)."""
    path = Path(corpus_dir) / "corpus.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(path, EXPECTED, CARD, f"unreadable corpus.json ({exc})") from None


def read_manifest(corpus_dir: str | Path, split: str | None = None) -> list[Utterance]:
    """The utterances of the corpus (of one split if given), paths made absolute."""
    corpus_dir = Path(corpus_dir)
    path = corpus_dir / "manifest.csv"
    if not path.is_file():
        raise DatasetError(path, EXPECTED, CARD)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r}: expected one of {SPLITS}")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != MANIFEST_FIELDS:
            raise DatasetError(path, EXPECTED, CARD, f"manifest columns are {reader.fieldnames}")
        try:
            utterances = [
                Utterance(
                    r["id"],
                    r["voice"],
                    r["sentence_id"],
                    r["text"],
                    corpus_dir / r["path"],
                    float(r["seconds"]),
                    r["split"],
                )  # fmt: skip
                for r in reader
            ]
        except (TypeError, ValueError) as exc:
            raise DatasetError(path, EXPECTED, CARD, f"malformed manifest row ({exc})") from None
    bad = next((u for u in utterances if u.split not in SPLITS), None)
    if bad is not None:
        raise DatasetError(path, EXPECTED, CARD, f"utterance {bad.id} has split {bad.split!r}, not one of {SPLITS}")
    return [u for u in utterances if split is None or u.split == split]

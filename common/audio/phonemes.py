"""English phonemes of normalised text, by espeak-ng, as a TTS model's text units.

API:
- `phonemize(texts, voice="en-us") -> list[str]`: each normalised text (`common.audio.text.normalize`) as
  espeak-ng's ASCII phoneme mnemonics (`espeak-ng -x`: `D@ kw'Ik br'aUn f'0ks`), words separated by spaces,
  its punctuation kept as the marks of `PAUSES` between clauses. One espeak-ng process for all texts.
- `PhonemeTokenizer`: `encode(phonemes, bos, eos)`, `decode`, `vocab_size`: characters of printable ASCII, ids
  after the 3 specials of `common.audio.text` (the space is id 3, as for `CharTokenizer`).

Why phonemes: English spelling maps to sound irregularly, and a small corpus (a few thousand sentences) holds too
few words for a model to learn that map while it learns to align text and audio; espeak-ng knows it. The official
Lina-Speech reads a 256-entry BPE of the text (learnt from 100B tokens); lina_speech reads phonemes by default
(`data.text_units`; its README, "Session 16", has the measurements). Punctuation is kept as distinct marks because
espeak-ng's output uses `,` (secondary stress), `?` and `!` itself and drops the text's punctuation.
"""

from __future__ import annotations

import re
import shutil
import string
import subprocess

from common.audio.text import CharTokenizer
from common.errors import ManyheadsError

PAUSES = {",": "|", ".": ".", "?": "[", "!": "]"}  # the text's punctuation -> marks espeak-ng -x never writes
ALPHABET = " " + "".join(c for c in string.printable if c not in string.whitespace)
CLAUSE = re.compile(r"([,.?!])")


def espeak_binary() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise ManyheadsError("phonemes need espeak-ng on PATH (Debian: apt install espeak-ng; `make setup` has it)")
    return path


def _espeak(lines: list[str], voice: str) -> list[str]:
    """espeak-ng -x of each line (no punctuation in a line: it would split it into clauses, one output line each)."""
    run = subprocess.run(
        [espeak_binary(), "-q", "-x", "-v", voice], input="\n".join(lines) + "\n", capture_output=True, text=True
    )
    if run.returncode != 0:
        raise RuntimeError(f"espeak-ng -x -v {voice} failed: {run.stderr.strip()[:300]}")
    return [" ".join(line.split()) for line in run.stdout.splitlines()]


def phonemize(texts: list[str], voice: str = "en-us") -> list[str]:
    """Phoneme strings of normalised texts (see the module docstring)."""
    parts = [[p.strip() for p in CLAUSE.split(t) if p.strip()] for t in texts]
    clauses = [p for ps in parts for p in ps if p not in PAUSES]
    said = _espeak(clauses, voice) if clauses else []
    if len(said) != len(clauses):  # espeak-ng split a clause after all: one process per clause, lines joined
        said = [" ".join(_espeak([c], voice)) for c in clauses]
    said_iter = iter(said)
    return [" ".join(PAUSES[p] if p in PAUSES else next(said_iter) for p in ps) for ps in parts]


class PhonemeTokenizer(CharTokenizer):
    """Characters of phoneme strings <-> ids (printable ASCII; the specials of CharTokenizer first)."""

    def __init__(self):
        super().__init__(ALPHABET)


TEXT_UNITS = ("chars", "phonemes")


def text_ids(text: str, units: str = "chars") -> list[int]:
    """BOS, the ids of a normalised text as `units` ("chars" or "phonemes"), EOS."""
    if units == "phonemes":
        return PhonemeTokenizer().encode(phonemize([text])[0])
    return CharTokenizer().encode(text)

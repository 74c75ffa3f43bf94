"""Text for speech: normalisation of written English into speakable words, and the character tokenizer.

API:
- `normalize(text) -> str`: lower-case ASCII words, numbers spelled out, abbreviations and symbols read out,
  punctuation reduced to `, . ? !` (kept: they shape the prosody of the synthesiser and of the model). May be "".
- `words(text) -> str`: the normalised text without punctuation, one space between words: what an ASR is scored on.
- `CharTokenizer`: `encode(normalised, bos=True, eos=True) -> list[int]`, `decode(ids) -> str`, `vocab_size`,
  over `ALPHABET`; ids follow the official Lina-Speech convention: `PAD` 0, `BOS` 1 (also the loss's
  `IGNORE_INDEX`: never a target), `EOS` 2 (the stop token), characters from 3.

A character tokenizer, not the official 256-entry BPE: the corpus has a few thousand sentences, far too few to
learn merges that generalise, and characters of normalised text cover every input the app accepts.
"""

from __future__ import annotations

import re
import unicodedata

PAD, BOS, EOS = 0, 1, 2
IGNORE_INDEX = BOS  # the official loss ignores id 1: BOS starts every sequence and is never predicted
N_SPECIALS = 3
PUNCTUATION = ",.?!"
ALPHABET = " abcdefghijklmnopqrstuvwxyz'" + PUNCTUATION

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")  # fmt: skip
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
ORDINAL_ENDINGS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                   "nine": "ninth", "twelve": "twelfth"}  # fmt: skip
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor", "st": "saint", "jr": "junior",
                 "sr": "senior", "prof": "professor", "vs": "versus", "etc": "et cetera", "e.g": "for example",
                 "i.e": "that is", "approx": "approximately", "gen": "general", "capt": "captain",
                 "lt": "lieutenant", "col": "colonel", "sgt": "sergeant", "rev": "reverend", "mt": "mount"}  # fmt: skip
SYMBOLS = {"&": " and ", "%": " percent ", "+": " plus ", "=": " equals ", "@": " at ", "#": " number ",
           "$": " dollars ", "<": " less than ", ">": " greater than "}  # fmt: skip


def cardinal(n: int) -> str:
    """0 <= n < 10**15 as words: 1984 -> 'one thousand nine hundred eighty four'."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("" if n % 10 == 0 else " " + ONES[n % 10])
    if n < 1000:
        return ONES[n // 100] + " hundred" + ("" if n % 100 == 0 else " " + cardinal(n % 100))
    for scale, name in SCALES:
        if n >= scale:
            return cardinal(n // scale) + " " + name + ("" if n % scale == 0 else " " + cardinal(n % scale))
    raise ValueError(f"{n} is out of range")


def ordinal(n: int) -> str:
    """3 -> 'third', 21 -> 'twenty first', 40 -> 'fortieth'."""
    head, _, last = cardinal(n).rpartition(" ")
    if last in ORDINAL_ENDINGS:
        last = ORDINAL_ENDINGS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return f"{head} {last}".strip()


def year(n: int) -> str:
    """How a year is read: 1984 -> 'nineteen eighty four', 1900 -> 'nineteen hundred', 2005 -> 'two thousand five'."""
    if 2000 <= n < 2010 or n % 1000 == 0:
        return cardinal(n)
    high, low = divmod(n, 100)
    return cardinal(high) + (" hundred" if low == 0 else (" oh " if low < 10 else " ") + cardinal(low))


def _number(match: re.Match) -> str:
    money, digits, decimals, suffix = match.group("money"), match.group("int"), match.group("dec"), match.group("suf")
    digits = digits.replace(",", "")
    if len(digits) > 15:
        return " " + " ".join(ONES[int(d)] for d in digits) + " "
    n = int(digits)
    suffix = (suffix or "").lower()
    if suffix in ("st", "nd", "rd", "th"):
        return f" {ordinal(n)} "
    if money and decimals and len(decimals) == 2:
        cents = int(decimals)
        spoken = f"{cardinal(n)} dollar{'s' * (n != 1)}"
        return f" {spoken} {cardinal(cents)} cent{'s' * (cents != 1)} " if cents else f" {spoken} "
    if decimals:
        spoken = cardinal(n) + " point " + " ".join(ONES[int(d)] for d in decimals)
    elif not money and "," not in match.group("int") and len(digits) == 4 and 1100 <= n < 2100:
        spoken = year(n)
    else:
        spoken = cardinal(n)
    if suffix == "s":  # decades: 1960s
        spoken = spoken[:-1] + "ies" if spoken.endswith("y") else spoken + "s"
    if money:
        spoken += " dollar" if spoken == "one" else " dollars"
    return f" {spoken} "


NUMBER = re.compile(
    r"(?P<money>\$)?(?P<int>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<dec>\d+))?(?P<suf>st|nd|rd|th|s)?\b", re.IGNORECASE
)
ABBREVIATION = re.compile(r"\b(" + "|".join(re.escape(a) for a in ABBREVIATIONS) + r")\.", re.IGNORECASE)


def normalize(text: str) -> str:
    """Speakable lower-case ASCII: see the module docstring. Idempotent: normalize(normalize(t)) == normalize(t)."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = text.replace("\u2019", "'").replace("`", "'")
    text = ABBREVIATION.sub(lambda m: " " + ABBREVIATIONS[m.group(1).lower()] + " ", text)
    text = re.sub(r"(?<=\d)\s*%", " percent", text)
    text = NUMBER.sub(_number, text)
    for symbol, spoken in SYMBOLS.items():
        text = text.replace(symbol, spoken)
    text = text.lower()
    text = re.sub(r"[;:]", ",", text)
    text = re.sub(r"[-_/\\|~*()\[\]{}\"]", " ", text)  # hyphens and brackets separate words; quotes go
    text = re.sub(r"[^a-z',.?! ]", "", text)
    text = re.sub(r"(?<![a-z])'|'(?![a-z])", " ", text)  # apostrophes only inside words (don't, o'clock)
    text = re.sub(r"\s+([,.?!])", r"\1", text)  # no space before punctuation
    text = re.sub(r"([,.?!])[,.?!]+", r"\1", text)  # '...' -> '.', '?!' -> '?'
    text = re.sub(r"^[\s,.?!]+", "", text)  # nothing speakable before the first word
    text = re.sub(r"([,.?!])(?=[a-z'])", r"\1 ", text)
    return re.sub(r"\s+", " ", text).strip()


def words(text: str) -> str:
    """The normalised words alone, for word error rates."""
    return " ".join(re.sub(r"[,.?!]", " ", normalize(text)).split())


class CharTokenizer:
    """Characters of normalised text <-> ids (3 specials first: PAD, BOS, EOS)."""

    def __init__(self, alphabet: str = ALPHABET):
        self.alphabet = alphabet
        self.ids = {c: i + N_SPECIALS for i, c in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet) + N_SPECIALS

    def encode(self, text: str, bos: bool = True, eos: bool = True) -> list[int]:
        """Ids of `text`, which must already be normalised (ValueError names the first foreign character)."""
        try:
            body = [self.ids[c] for c in text]
        except KeyError as exc:
            problem = f"character {exc.args[0]!r} is not in the alphabet {self.alphabet!r}: normalize first"
            raise ValueError(problem) from None
        return [BOS] * bos + body + [EOS] * eos

    def decode(self, ids) -> str:
        """Text of `ids`, specials skipped."""
        return "".join(self.alphabet[i - N_SPECIALS] for i in map(int, ids) if i >= N_SPECIALS)

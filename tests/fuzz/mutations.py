"""Broken versions of a valid input file, drawn with a fixed seed: what a fuzz case feeds a reader.

Every format gets: an empty file, random bytes, truncations, random byte flips, and files of the other formats
(a PNG where a CSV goes, ...). Text tables (CSV, whitespace text) also get one-row and header-only files and one
numeric cell replaced by text, nan, inf, an empty cell, a huge or a negative number. JSON also gets its numbers
turned into strings or nulls, a key dropped, and a list at the top.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zlib

import numpy as np
from PIL import Image

NUMBER = re.compile(rb"(?<![\w.])-?\d+(?:\.\d+)?(?:e[-+]?\d+)?(?![\w.])")
CELLS = {"text": b"abc", "nan": b"nan", "inf": b"inf", "empty": b"", "huge": b"1e308", "negative": b"-7"}


def foreign_files() -> dict[str, bytes]:
    """One small valid file of each format the readers take, to be fed where another format is expected."""
    png = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(6, 8)).save(png, "PNG")
    csv = b"date,open,high,low,close,volume\n2021-01-01,1,2,0.5,1.5,10\n"
    coco = json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}).encode()
    idx = bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
    return {"png": png.getvalue(), "csv": csv, "json": coco, "idx": idx, "gzip": gzip.compress(csv), "words": b"hello"}


def mutations(valid: bytes, kind: str, name: str) -> dict[str, bytes]:
    """{case id: file content} for `valid`, a file of `kind` ("binary", "table" or "json"); seeded by `name`."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cases = {"empty": b""}
    for size in (1, 100, 5000):
        cases[f"random-{size}"] = rng.bytes(size)
    for fraction in (0.1, 0.5, 0.9):
        cases[f"truncated-{fraction}"] = valid[: int(len(valid) * fraction)]
    cases["truncated-last-byte"] = valid[:-1]
    for i in range(8):
        flipped = np.frombuffer(valid, dtype=np.uint8).copy()
        where = rng.integers(0, len(valid), size=rng.integers(1, 9))
        flipped[where] = rng.integers(0, 256, size=len(where), dtype=np.uint8)
        cases[f"flipped-{i}"] = flipped.tobytes()
    cases |= {f"foreign-{k}": v for k, v in foreign_files().items()}
    if kind == "table":
        cases |= _table_cases(valid, rng)
    if kind == "json":
        cases |= _json_cases(valid, rng)
    return cases


def _table_cases(valid: bytes, rng) -> dict[str, bytes]:
    lines = valid.splitlines(keepends=True)
    header = lines[0] if not NUMBER.fullmatch(lines[0].split(b",")[0].split()[0]) else b""
    body = lines[1:] if header else lines
    cases = {"header-only": header or b"\n", "one-row": header + body[0]}
    row = int(rng.integers(0, len(body)))
    numbers = list(NUMBER.finditer(body[row]))
    cell = numbers[int(rng.integers(0, len(numbers)))]
    for label, value in CELLS.items():
        changed = body[row][: cell.start()] + value + body[row][cell.end() :]
        cases[f"cell-{label}"] = header + b"".join(body[:row]) + changed + b"".join(body[row + 1 :])
    return cases


def _json_cases(valid: bytes, rng) -> dict[str, bytes]:
    data = json.loads(valid)

    def numbers_to(value, make):
        if isinstance(value, dict):
            return {k: numbers_to(v, make) for k, v in value.items()}
        if isinstance(value, list):
            return [numbers_to(v, make) for v in value]
        return make(value) if type(value) in (int, float) else value

    dropped = json.loads(valid)
    entries = [e for v in dropped.values() if isinstance(v, list) for e in v if isinstance(e, dict) and e]
    entry = entries[int(rng.integers(0, len(entries)))]
    entry.pop(sorted(entry)[int(rng.integers(0, len(entry)))])
    return {
        "json-strings-for-numbers": json.dumps(numbers_to(data, str)).encode(),
        "json-nulls-for-numbers": json.dumps(numbers_to(data, lambda v: None)).encode(),
        "json-floats-for-ints": json.dumps(numbers_to(data, lambda v: v + 0.5)).encode(),
        "json-negative-numbers": json.dumps(numbers_to(data, lambda v: -v - 1)).encode(),
        "json-key-dropped": json.dumps(dropped).encode(),
        "json-list-at-top": json.dumps([data]).encode(),
    }

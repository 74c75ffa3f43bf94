"""The IDX file format of MNIST and Fashion-MNIST (LeCun's `*-ubyte` files, gzipped or not).

Header: two zero bytes, a type code (0x08 = unsigned byte), the number of dimensions d, then d
big-endian uint32 sizes; the data follows, row-major. Images are [N, 28, 28] uint8, labels [N] uint8.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from common.errors import DatasetError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, card: str, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (`.gz` or raw) into a numpy array; DatasetError naming `path` and `card` if malformed.

    Args:
        path: the file.
        card: the data card named in errors.
        ndim: the expected number of dimensions (3 for images, 1 for labels), checked when given.
    """
    path = Path(path)
    expected = f"an IDX file (MNIST format, gzipped or not){'' if ndim is None else f' with {ndim} dimension(s)'}"
    if not path.is_file():
        raise DatasetError(path, expected, card)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz: BadGzipFile (an OSError), EOF or zlib's error
        raise DatasetError(path, expected, card, problem=f"unreadable file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DatasetError(path, expected, card, problem="not an IDX file (bad magic number)")
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise DatasetError(path, expected, card, problem=f"IDX file with {dims} dimensions")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DatasetError(path, expected, card, problem="truncated IDX header")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    size = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != size:
        raise DatasetError(
            path, expected, card, problem=f"IDX data of {len(raw) - header} bytes, the header {shape} says {size}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def find_idx(root: Path, stem: str) -> Path:
    """`root/<stem>` or `root/<stem>.gz`, whichever exists (the raw name when neither does, for the error)."""
    for name in (stem, f"{stem}.gz"):
        if (root / name).is_file():
            return root / name
    return root / f"{stem}.gz"

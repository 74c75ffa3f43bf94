"""The IDX reader: round trip gz and raw, and malformed files named with the data card."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import pytest

from common.errors import DatasetError
from common.vision.idx import read_idx
from tests.common.vision.fakes import idx_bytes


@pytest.mark.parametrize("gz", [True, False])
def test_round_trip(tmp_path, gz):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("x.gz" if gz else "x")
    path.write_bytes(gzip.compress(idx_bytes(x)) if gz else idx_bytes(x))
    got = read_idx(path, "mnist_format", ndim=3)
    assert got.shape == (2, 3, 4) and np.array_equal(got, x)


@pytest.mark.parametrize(
    "data, problem",
    [
        (b"\x01\x02\x08\x03" + b"\x00" * 20, "bad magic"),
        (idx_bytes(np.zeros((2, 3, 4), np.uint8))[:-5], r"the header \(2, 3, 4\) says 24"),
        (idx_bytes(np.zeros((2,), np.uint8)), "1 dimensions"),
        (b"\x00\x00\x08\x03\x00", "truncated"),
    ],
)
def test_malformed_files_name_file_and_card(tmp_path, data, problem):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=problem) as info:
        read_idx(path, "mnist_format", ndim=3)
    assert str(path) in str(info.value) and "data_cards/mnist_format.md" in str(info.value)


def test_broken_gzip_and_missing_file(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match="unreadable"):
        read_idx(path, "fashion_mnist")
    with pytest.raises(DatasetError, match="dataset not found"):
        read_idx(tmp_path / "absent.gz", "fashion_mnist")


def test_damaged_gzip_stream(tmp_path):
    """A .gz whose header is intact but whose deflate data is damaged: zlib's own error, not an OSError."""
    data = bytearray(gzip.compress(idx_bytes(np.arange(2 * 3 * 40, dtype=np.uint8).reshape(2, 3, 40))))
    data[12] ^= 0xFF  # early in the deflate stream (the gzip header is 10 bytes)
    with pytest.raises(zlib.error):
        gzip.decompress(bytes(data))
    path = tmp_path / "x.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="unreadable file") as info:
        read_idx(path, "fashion_mnist", ndim=3)
    assert str(path) in str(info.value)

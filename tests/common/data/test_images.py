"""The shared image reader (common/data/images.py) and every reader built on it: 16-bit grey is scaled to 8 bits
(not clipped to white), an image over Pillow's decompression-bomb limit is refused with the size and the limit,
an extreme aspect ratio is refused by the DETR predict, and unreadable files name the file."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from common.data.images import open_image
from common.detection.predict import predict as detect
from common.detection.transforms import MEAN, STD
from common.errors import DatasetError, InputError
from common.vision.datasets import FileDataset
from common.vision.predict import load_image
from tests.common.detection.test_module import TinyDetector

# 16-bit values and their 8-bit scaling round(v / 257): 257 = 65535 / 255 maps the full range onto 0..255
GREY16 = np.array([[0, 128, 129, 257], [32896, 40000, 65406, 65535]], np.uint16)
GREY8 = np.array([[0, 0, 1, 1], [128, 156, 254, 255]], np.uint8)


class Recorder(TinyDetector):
    """A detector that keeps the images it is given and finds nothing (any input size works)."""

    def forward(self, images, masks=None):
        self.seen = images
        return torch.full((len(images), 2, 5), -10.0), torch.full((len(images), 2, 4), 0.5)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(path, side: int = 14_000):
    """A valid black 1-bit PNG of side x side pixels, written without decoding it (24.5 MB raw, ~25 kB on disk)."""
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)  # 1-bit grey, no interlace
    rows = zlib.compress(bytes(side * (1 + -(-side // 8))), 9)  # each row: filter byte 0 + packed bits
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")
    )
    return path


def test_16_bit_grey_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "grey16.png"
    Image.fromarray(GREY16).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "I;16"  # what Pillow reads; its convert("L") would make all but 0 white
    image = open_image(path)
    assert image.mode == "L" and np.array_equal(np.asarray(image), GREY8)
    assert np.array_equal(np.asarray(open_image(path, "RGB")), np.repeat(GREY8[..., None], 3, -1))


def test_32_bit_grey_tiff_is_read_as_16_bit_range(tmp_path):
    path = tmp_path / "grey32.tif"
    Image.fromarray(np.array([[-5, 300, 65535, 70000]], np.int32)).save(path)
    assert np.asarray(open_image(path)).tolist() == [[0, 1, 255, 255]]  # clipped to 0..65535 first


def test_8_bit_images_are_unchanged(tmp_path):
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba).save(path)
    assert open_image(path).mode == "RGBA"
    assert np.array_equal(np.asarray(open_image(path, "RGB")), rgba[..., :3])  # as Pillow's convert: alpha dropped


def test_readers_see_16_bit_grey_scaled(tmp_path):
    """The vision predict, the image-folder dataset and the DETR predict all read the same 8-bit values."""
    path = tmp_path / "grey16.png"
    Image.fromarray(np.full((16, 16), 16448, np.uint16)).save(path)  # 16448 / 257 = 64: dark grey
    expected = 64 / 255 * 2 - 1  # normalised with mean = std = 0.5
    torch.testing.assert_close(load_image(path, 1, 8), torch.full((1, 1, 8, 8), expected))
    seen = []
    FileDataset([path], [0], lambda im: seen.append(np.asarray(im.convert("L"))) or 0, "image_folder")[0]
    assert np.all(seen[0] == 64)
    detector = Recorder()
    detect(detector, path, tmp_path / "out", {"spec": {"preprocess": {"eval_size": 16, "max_size": 16}}})
    rgb = (64 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)  # the DETR normalisation of grey 64 in R, G, B
    torch.testing.assert_close(detector.seen[0], rgb[:, None, None].expand(3, 16, 16))


def test_decompression_bomb_is_refused_with_size_and_limit(tmp_path):
    small = np.asarray(open_image(huge_png(tmp_path / "small.png", side=20)))
    assert small.shape == (20, 20) and not small.any()  # the writer makes real PNGs
    path = huge_png(tmp_path / "huge.png")
    with pytest.raises(InputError) as err:
        open_image(path)
    text = str(err.value)
    assert err.value.path == path and "image too large" in text
    assert "196000000 pixels" in text and f"{2 * Image.MAX_IMAGE_PIXELS:,} pixels" in text
    with pytest.raises(InputError, match="image too large"):
        load_image(path, 3, 32)  # the vision predict


def test_dataset_files_over_the_limit_are_a_dataset_error(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (40, 30)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # 1200 pixels > 2 x 500: Pillow's error threshold
    with pytest.raises(DatasetError) as err:
        FileDataset([path], [0], lambda im: im, "image_folder")[0]
    assert err.value.path == path and err.value.card == "image_folder" and "1200 pixels" in str(err.value)


def test_extreme_aspect_ratio_is_refused_by_the_detr_predict(tmp_path):
    spec = {"spec": {"preprocess": {"eval_size": 128, "max_size": 213}}}
    ok, bad = tmp_path / "ok.png", tmp_path / "bad.png"
    Image.new("RGB", (2000, 10)).save(ok)  # resized to 213 x 1: still a picture
    Image.new("RGB", (10, 5000)).save(bad)  # would be 0 x 213: torchvision's resize raises ValueError
    detector = Recorder()
    detect(detector, ok, tmp_path / "out", spec)
    assert detector.seen.shape == (1, 3, 1, 213)
    with pytest.raises(InputError) as err:
        detect(detector, bad, tmp_path / "out", spec)
    assert err.value.path == bad and "aspect ratio too extreme (10 x 5000 pixels)" in str(err.value)
    assert "at most 213 times its shorter side" in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not an image", "truncated"])
def test_unreadable_files_name_the_file(tmp_path, content):
    path = tmp_path / "x.png"
    if content == "truncated":
        Image.fromarray(np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)).save(path)
        content = path.read_bytes()[:-60]
    path.write_bytes(content)
    with pytest.raises(InputError, match="cannot read image") as err:
        open_image(path)
    assert err.value.path == path
    with pytest.raises(DatasetError, match="cannot read image") as err:
        open_image(path, card="coco2017")
    assert err.value.card == "coco2017"


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="input file not found"):
        open_image(tmp_path / "absent.png")
    with pytest.raises(DatasetError, match="image file not found"):
        open_image(tmp_path / "absent.png", card="image_folder")

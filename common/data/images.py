"""The one way every reader and predictor opens an image file.

- Size: an image over Pillow's decompression-bomb limit (2 x `Image.MAX_IMAGE_PIXELS`, about 179 million
  pixels) is refused with the limit in the message, before any pixel is decoded.
- 16-bit grey (modes `I;16*`, and `I`, read as 0..65535) is scaled to 8 bits (round(v / 257)): Pillow's own
  `convert("L")` clips every value above 255, which turns a 16-bit photo white.
- Errors: `InputError` for a user's file given to predict, `DatasetError` naming the data card for a file of a
  dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import DatasetError, InputError

EXPECTED = "an image file readable by Pillow (png, jpg, bmp, tif, webp, ...)"
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_image(path: str | Path, mode: str | None = None, card: str | None = None) -> Image.Image:
    """The decoded image at `path`, converted to `mode` ("L", "RGB") when given, else in its own mode (16-bit
    grey as "L"). `card`: the data card of the dataset holding the file (DatasetError), None for a user's input
    (InputError)."""
    path = Path(path)

    def error(problem: str, expected: str = EXPECTED):
        if card is None:
            return InputError(path, expected, problem=problem)
        return DatasetError(path, expected, card, problem=problem)

    if not path.is_file():
        raise error("input file not found" if card is None else "image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            image = to_eight_bit(im)
    except Image.DecompressionBombError as exc:
        limit = f"an image of at most {2 * Image.MAX_IMAGE_PIXELS:,} pixels (Pillow's decompression-bomb limit)"
        raise error(f"image too large ({str(exc).rstrip('.')})", limit) from None
    except (OSError, ValueError) as exc:
        raise error(f"cannot read image ({type(exc).__name__}: {exc})") from None
    return image.convert(mode) if mode is not None and image.mode != mode else image


def to_eight_bit(image: Image.Image) -> Image.Image:
    """16-bit grey as 8-bit "L" scaled by 1/257 (0..65535 -> 0..255); any other mode unchanged."""
    if image.mode not in SIXTEEN_BIT:
        return image
    values = np.clip(np.asarray(image).astype(np.int32), 0, 65535)
    return Image.fromarray(((values + 128) // 257).astype(np.uint8))  # = round(v / 257): v / 257 is never x.5

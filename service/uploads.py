"""Checks on uploaded images, in the order that keeps the server safe.

1. size in bytes (413) - before reading further;
2. format from the header (415) - only the allowed formats are decoded at all;
3. pixel count from the header (413) - a decompression bomb is refused before decoding;
4. a full decode (422 on corrupt data).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from service.errors import ApiError

_ORIENTATION = 0x0112  # the EXIF tag


@dataclass(frozen=True)
class ImageInfo:
    format: str
    width: int
    height: int
    mode: str


def check_image(
    data: bytes, *, max_bytes: int, max_pixels: int, formats: tuple[str, ...]
) -> ImageInfo:
    if len(data) > max_bytes:
        raise ApiError(
            413,
            "payload_too_large",
            f"image is {len(data)} bytes; the limit is {max_bytes}",
            "file",
        )
    if not data:
        raise ApiError(415, "unsupported_media_type", "image is empty: not an image", "file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError as exc:
        allowed = ", ".join(formats)
        raise ApiError(
            415, "unsupported_media_type", f"not an image in an allowed format ({allowed})", "file"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ApiError(413, "image_too_large", f"image has too many pixels: {exc}", "file") from exc
    with image:
        width, height = image.size
        if width * height > max_pixels:
            raise ApiError(
                413,
                "image_too_large",
                f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                "file",
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ApiError(422, "invalid_image", f"image data is corrupt: {exc}", "file") from exc
        if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):  # viewed turned a quarter
            width, height = height, width  # the size the worker sees (it applies the turn)
        return ImageInfo(format=str(image.format), width=width, height=height, mode=image.mode)


def upright_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) as the worker sees the image (EXIF turn applied), from the header
    alone; None if it cannot be read (the worker then says why)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if image.getexif().get(_ORIENTATION) in (5, 6, 7, 8):
                width, height = height, width
            return width, height
    except (OSError, SyntaxError, ValueError):
        return None

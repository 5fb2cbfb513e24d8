"""Images in and out of the engine: PIL <-> tensors in [-1, 1], fitting, PSNR.

How an image is fitted to the model's resolution is explicit (``fit``):

=============  =============================================================
``fit``        what happens to an image of another size
=============  =============================================================
``error``      refused with a message naming the size the model takes
``resize``     resized to the model's size (aspect ratio not kept), bicubic
``crop``       scaled so the short side fits, then centre-cropped
=============  =============================================================

Before that, every image is turned upright by its EXIF orientation and becomes 8 bits
per channel without alpha: 16-bit greyscale scaled, transparency flattened onto white.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageOps

from worker.engine.errors import InputError

FitMode = Literal["error", "resize", "crop"]


_WIDE_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")  # how PIL opens 16-bit greyscale PNGs


def to_8bit(image: Image.Image) -> Image.Image:
    """8 bits per channel and no alpha, before anything else touches the pixels.

    16-bit greyscale (PNG) is scaled to 8 bits (PIL's own ``convert`` clips it at 255,
    which turns most of such an image white); transparent pixels are flattened onto
    white (``convert("RGB")`` would keep whatever colour a fully transparent pixel holds).
    """
    if image.mode in _WIDE_GREY:
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
    return image


def fit_image(image: Image.Image, size: tuple[int, int], fit: FitMode = "error") -> Image.Image:
    """Bring ``image`` upright (its EXIF orientation), to 8 bits without alpha
    (``to_8bit``), then to ``size`` = (height, width) as ``fit`` says."""
    image = to_8bit(ImageOps.exif_transpose(image))  # a phone photo's EXIF rotation, applied
    h, w = size
    if image.size == (w, h):
        return image
    if fit == "error":
        raise InputError(
            f"image: the model takes {w}x{h} images, got {image.size[0]}x{image.size[1]}; "
            "resize it or pass fit=resize or fit=crop"
        )
    if fit == "resize":
        return image.resize((w, h), Image.Resampling.BICUBIC)
    if fit == "crop":
        scale = max(w / image.size[0], h / image.size[1])
        scaled = image.resize(
            (max(w, round(image.size[0] * scale)), max(h, round(image.size[1] * scale))),
            Image.Resampling.BICUBIC,
        )
        left, top = (scaled.size[0] - w) // 2, (scaled.size[1] - h) // 2
        return scaled.crop((left, top, left + w, top + h))
    raise InputError(f"fit: expected error, resize or crop, got {fit!r}")


def to_tensor(images: list[Image.Image], channels: int = 3) -> torch.Tensor:
    """PIL images -> (B, C, H, W) float32 in [-1, 1]."""
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise InputError(f"channels: images have 1 or 3 channels, model asks for {channels}")
    arrays = [np.asarray(im.convert(mode), dtype=np.float32) for im in images]
    batch = np.stack([a if a.ndim == 3 else a[..., None] for a in arrays])
    return torch.from_numpy(batch).permute(0, 3, 1, 2) / 127.5 - 1.0


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(B, H, W, C) uint8 -> (B, C, H, W) float32 in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(B, C, H, W) in [-1, 1] -> PIL images (clamped, rounded to 8 bits)."""
    arr = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    out = []
    for a in arr.permute(0, 2, 3, 1).numpy():
        out.append(Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a))
    return out


def load_images(
    paths: list[Path], size: tuple[int, int], channels: int, fit: FitMode
) -> torch.Tensor:
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                images.append(fit_image(im, size, fit))
        except (OSError, SyntaxError) as exc:
            raise InputError(f"image: cannot read {path}: {exc}") from exc
    return to_tensor(images, channels)


def psnr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB for images in [-1, 1] (peak-to-peak 2)."""
    mse = ((a.float().cpu() - b.float().cpu()) ** 2).flatten(1).mean(1)
    return [float("inf") if m == 0 else 10 * math.log10(4.0 / float(m)) for m in mse]

"""Decode one image and bring it to the network's input: one channel, ``size x size``, uint8.

Two modes:

- ``pad`` (default): resize keeping the aspect ratio so the longer side is ``size``, then pad
  with black (0) to a centred square. Nothing of the radiograph is cut off.
- ``crop``: resize so the shorter side is ``size``, then take the centre square. (Training may
  add a random crop on top; see ``batches.py``.)

Any Pillow-readable file works (PNG, JPEG, ...), in any mode: 8-bit grayscale, RGB, palette,
with alpha (composited over black, the radiograph background), 16-bit or 32-bit integer and
float (scaled linearly so that the image's maximum becomes 255; an image whose values already
lie within 0..255 keeps them).
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MODES = ("pad", "crop")
_WIDE_MODES = ("I", "F", "I;16", "I;16B", "I;16L", "I;16N")


class ImageDecodeError(ValueError):
    """A file that Pillow cannot decode as an image; the message names the file."""


def _to_gray(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> mode ``L``."""
    if img.mode in _WIDE_MODES:
        arr = np.asarray(img, dtype=np.float32)
        top = max(float(arr.max()), 255.0)
        gray = np.clip(np.rint(arr * np.float32(255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L")
    if img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info:
        la = np.asarray(img.convert("LA"), dtype=np.uint16)
        gray = (la[..., 0] * la[..., 1] + 127) // 255  # over black
        return Image.fromarray(gray.astype(np.uint8), mode="L")
    return img if img.mode == "L" else img.convert("L")


def _open(source: str | os.PathLike | Image.Image, size: int) -> Image.Image:
    if isinstance(source, Image.Image):
        return source
    img = None
    try:
        img = Image.open(source)
        if img.format == "JPEG":
            img.draft("L", (size, size))  # decode JPEGs at a reduced scale: much faster
            img = ImageOps.exif_transpose(img)
        img.load()
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if img is not None:
            img.close()
        reason = str(exc).replace(f"'{os.fspath(source)}'", "").strip()
        raise ImageDecodeError(
            f"{os.fspath(source)}: cannot be decoded as an image ({exc.__class__.__name__}: {reason}); "
            "pass a PNG or JPEG radiograph, or replace the file if it is truncated"
        ) from exc
    return img


def preprocess_image(source: str | os.PathLike | Image.Image, size: int, mode: str = "pad") -> np.ndarray:
    """Decode ``source`` (a path or a PIL image) and return a (size, size) uint8 array.

    Raises ImageDecodeError (a ValueError) naming the file when it is not a readable image,
    FileNotFoundError when it does not exist.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(size) < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    size = int(size)
    gray = _to_gray(_open(source, size))
    width, height = gray.size
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{getattr(source, 'filename', source)}: empty image ({width}x{height})")
    if mode == "crop":
        side = min(width, height)
        left, top = (width - side) / 2.0, (height - side) / 2.0
        # Crop box and resize in one resampling pass.
        out = gray.resize((size, size), Image.BILINEAR, box=(left, top, left + side, top + side))
        return np.asarray(out, dtype=np.uint8).copy()
    scale = size / max(width, height)
    new_w = min(size, max(1, round(width * scale)))
    new_h = min(size, max(1, round(height * scale)))
    resized = np.asarray(gray.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    out = np.zeros((size, size), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    out[top:top + new_h, left:left + new_w] = resized
    return out

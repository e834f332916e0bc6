"""Opening image files robustly: RGB out, or :class:`BadImage` with a reason — never a crash.

Missing, truncated and corrupt files, and images with more pixels than allowed (decompression
bombs), raise :class:`BadImage`; datasets turn it into a ``{"bad": "path: reason"}`` item that the
trainer counts and skips. Every other mode becomes 8-bit RGB: grayscale, palette and CMYK through
PIL's conversion (what LAVIS does), transparent images composited onto white (not the arbitrary
colour hidden under transparent pixels), 16-bit images scaled to 8 bits (PIL would clip them to
white). EXIF orientation is not applied, as in LAVIS.

Datasets, ``data check`` and the Captioner all open images through here, so an image that trains
is an image that captions. PIL and numpy are imported when an image is opened, not with the module.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

# PIL's own default (Image.MAX_IMAGE_PIXELS): about 9459 x 9459.
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


class BadImage(Exception):
    """An image file that cannot be used; ``str(exc)`` says why, ``kind`` is ``missing``,
    ``unreadable`` or ``too_large``."""

    def __init__(self, reason: str, kind: str = "unreadable") -> None:
        super().__init__(reason)
        self.kind = kind


def open_rgb(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """Decode ``path`` completely and return an RGB image; raise :class:`BadImage` if unusable."""
    return _guarded(path, max_pixels, decode=True)


def check_header(path: str, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
    """Only what the header tells (exists, is an image, size allowed): fast, but misses truncation."""
    _guarded(path, max_pixels, decode=False)


def _guarded(path: str, max_pixels: int, *, decode: bool) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with open(path, "rb") as handle:  # one read; the file is closed whatever happens next
            data = handle.read() if decode else handle.read(1 << 20)
    except FileNotFoundError:
        raise BadImage("file not found", "missing") from None
    except IsADirectoryError:
        raise BadImage("is a directory") from None
    except OSError as exc:
        raise BadImage(f"cannot read: {exc.strerror or exc}") from None
    return _decoded(data, max_pixels, decode=decode)


def decode_rgb(data: bytes, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """:func:`open_rgb` for an image already in memory (a member of a tar shard)."""
    return _decoded(data, max_pixels, decode=True)


def _decoded(data: bytes, max_pixels: int, *, decode: bool) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # PIL warns above Image.MAX_IMAGE_PIXELS and refuses above twice that; the limit that
            # applies here is max_pixels, checked below before anything is decoded.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > max_pixels:
            raise BadImage(f"{width}x{height} = {width * height:,} pixels, more than max_image_pixels "
                           f"{max_pixels:,} (decompression bomb?)", "too_large")
        if not decode:
            return image
        image.load()
        return to_rgb(image)
    except BadImage:
        raise
    except Image.DecompressionBombError as exc:
        raise BadImage(f"refused as a decompression bomb: {exc}", "too_large") from None
    except UnidentifiedImageError:
        raise BadImage("empty file" if not data else "not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, MemoryError) as exc:
        # truncated data ("image file is truncated"), broken headers, unsupported variants
        raise BadImage(f"cannot decode: {type(exc).__name__}: {exc}") from None


def to_rgb(image: Any) -> Any:
    """8-bit RGB; an RGB image is returned as is (no copy)."""
    import numpy as np
    from PIL import Image

    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L") and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image)
        if mode == "I" and values.size and values.max() <= 255 and values.min() >= 0:
            eight = values.astype(np.uint8)  # 8-bit data stored as 32-bit ints
        else:
            eight = (np.clip(values, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(eight, "L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float32)
        scale = 255.0 if values.size and float(values.max()) <= 1.0 else 1.0
        return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")

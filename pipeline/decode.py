"""Fetch and decode one image, turning every failure into an error kind and a message.

Nothing here raises for a bad image: ``fetch_and_decode`` returns either a decoded RGB
array or an ``ImageError``; the caller writes an error row for the latter.
"""

from __future__ import annotations

import io
import math
import time
import warnings
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from schemas.spec import DecodeSpec

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
# Worth asking libjpeg for a down-scaled decode once the image is this much bigger than needed.
_DRAFT_FACTOR = 2

# Storage errors worth retrying: network hiccups, throttling, server errors.
_TRANSIENT_NAMES = {
    "ConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "EndpointConnectionError",
    "TimeoutError",
    "ClientPayloadError",
    "ServerDisconnectedError",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
}


@dataclass(frozen=True)
class ImageError:
    """Why an image could not be used."""

    kind: str  # one of schemas.output.ERROR_KINDS
    message: str


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, possibly shrunk; ``scale`` maps original pixels to ``rgb`` pixels."""

    rgb: np.ndarray  # [h, w, 3] uint8
    width: int  # original width after EXIF orientation
    height: int
    scale: float  # rgb width / original width


def _is_transient(exc: BaseException) -> bool:
    names = {type(exc).__name__, *(type(c).__name__ for c in _causes(exc))}
    text = str(exc)
    return bool(names & _TRANSIENT_NAMES) or any(
        code in text for code in ("SlowDown", "503", "500 Internal", "RequestTimeout")
    )


def _causes(exc: BaseException) -> list[BaseException]:
    out = []
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        out.append(exc)
        if len(out) > 8:
            break
    return out


def fetch_bytes(fs: fsspec.AbstractFileSystem, path: str, spec: DecodeSpec) -> bytes | ImageError:
    """Read an object with retries and exponential backoff on transient storage errors."""
    delay = spec.retry_backoff_s
    for attempt in range(spec.retries + 1):
        try:
            size = fs.size(path)
            if size is not None and size > spec.max_bytes:
                return ImageError("too_large", f"object is {size} bytes; limit {spec.max_bytes}")
            with fs.open(path, "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return ImageError("missing", "no such object")
        except IsADirectoryError:
            return ImageError("unsupported", "is a directory, not an image")
        except PermissionError as exc:
            return ImageError("storage", f"access denied: {exc}")
        except Exception as exc:  # s3fs/aiohttp/botocore raise many types
            if attempt < spec.retries and _is_transient(exc):
                time.sleep(delay)
                delay *= 2
                continue
            return ImageError("storage", f"{type(exc).__name__}: {exc}")
    return ImageError("storage", "[internal] retry loop ended without a result")


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    width, height = img.size
    try:
        orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block must not lose the image
        orientation = 1
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any Pillow mode as ``[h, w, 3]`` uint8 RGB; 16/32-bit and float are rescaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        if img.mode == "F":
            top = max(float(values.max(initial=1.0)), 1.0)
        gray = np.clip(values / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on mid-grey: transparent regions should read as neither black nor white.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (128, 128, 128, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def decode_image(data: bytes, spec: DecodeSpec) -> DecodedImage | ImageError:
    """Decode bytes to RGB with EXIF orientation, a pixel cap and down-scaling to ``max_side``."""
    if not data:
        return ImageError("unreadable", "object is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Our own cap below is the guard; Pillow's must not fire first at a lower limit.
            Image.MAX_IMAGE_PIXELS = spec.max_pixels
            img = Image.open(io.BytesIO(data))
            width, height = _oriented_size(img)
            if width * height > spec.max_pixels:
                return ImageError(
                    "too_large",
                    f"{width}x{height} = {width * height} pixels; limit {spec.max_pixels}",
                )
            shrink = min(1.0, spec.max_side / max(width, height))
            if img.format == "JPEG" and shrink * _DRAFT_FACTOR < 1.0:
                img.draft("RGB", (math.ceil(img.size[0] * shrink), math.ceil(img.size[1] * shrink)))
            img = ImageOps.exif_transpose(img)
            rgb_img = img
            if max(img.size) > spec.max_side:
                s = spec.max_side / max(img.size)
                new_size = (max(1, round(img.size[0] * s)), max(1, round(img.size[1] * s)))
                rgb_img = img.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            rgb = to_rgb_array(rgb_img)
    except UnidentifiedImageError:
        return ImageError("unreadable", "not a recognised image format")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return ImageError("too_large", str(exc))
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        # Truncated or corrupt data; Pillow reports these as OSError/SyntaxError.
        return ImageError("unreadable", f"{type(exc).__name__}: {exc}")
    except MemoryError:
        return ImageError("too_large", "out of memory while decoding")
    except Exception as exc:  # an unsupported mode or codec feature
        return ImageError("unsupported", f"{type(exc).__name__}: {exc}")
    return DecodedImage(rgb=rgb, width=width, height=height, scale=rgb.shape[1] / width)


def fetch_and_decode(
    fs: fsspec.AbstractFileSystem, path: str, spec: DecodeSpec
) -> DecodedImage | ImageError:
    """Fetch ``path`` from ``fs`` and decode it; never raises for bad data."""
    data = fetch_bytes(fs, path, spec)
    if isinstance(data, ImageError):
        return data
    return decode_image(data, spec)

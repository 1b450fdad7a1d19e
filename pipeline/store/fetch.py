"""Fetch and decode one image, turning every failure into an error kind and a message.

Nothing here raises for a bad image: ``fetch_and_decode`` returns either a decoded RGB
array or an ``ImageError``; the caller writes an error row for the latter. Transient storage
errors are retried here, at most ``decode.retries`` times per image, and each retry is counted
by kind (``schemas.output.RETRY_KINDS``) for the row and the job's statistics.
"""

from __future__ import annotations

import http.client
import io
import math
import time
import warnings
from collections import Counter
from dataclasses import dataclass

import fsspec
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from schemas.output import RETRY_KINDS, ErrorKind
from schemas.spec import DecodeSpec

try:  # botocore comes with s3fs; without it only the generic types below are recognised
    from botocore.exceptions import ConnectionError as _BotoConnectionError
    from botocore.exceptions import (
        ConnectTimeoutError,
        HTTPClientError,
        IncompleteReadError,
        ReadTimeoutError,
    )
    from botocore.parsers import ResponseParserError
except ImportError:  # pragma: no cover
    _BotoConnectionError = HTTPClientError = IncompleteReadError = ()  # type: ignore[assignment,misc]
    ConnectTimeoutError = ReadTimeoutError = ResponseParserError = ()  # type: ignore[assignment,misc]
try:
    from aiohttp import ClientConnectionError, ClientPayloadError
except ImportError:  # pragma: no cover
    ClientConnectionError = ClientPayloadError = ()  # type: ignore[assignment,misc]

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = {5, 6, 7, 8}
# Worth asking libjpeg for a down-scaled decode once the image is this much bigger than needed.
_DRAFT_FACTOR = 2

# Transient storage errors by kind (schemas.output.RETRY_KINDS). Types are checked first, in
# this order (botocore's ReadTimeoutError is also an HTTPClientError; aiohttp's
# ServerTimeoutError is also a ClientConnectionError): the first exception in the chain
# (the error, then its causes) that a rule recognises decides.
_TIMEOUT_TYPES: tuple[type[BaseException], ...] = (
    TimeoutError,  # socket.timeout, asyncio.TimeoutError, aiohttp and fsspec timeouts
    ReadTimeoutError,
    ConnectTimeoutError,
)
_CONNECTION_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted, broken pipe
    http.client.IncompleteRead,
    _BotoConnectionError,  # EndpointConnectionError, ConnectionClosedError, ...
    HTTPClientError,  # ResponseStreamingError: the connection broke mid-body
    IncompleteReadError,
    ClientConnectionError,
    ClientPayloadError,
)
# S3 answers a malformed (e.g. truncated XML) error body under load; s3fs retries it too.
_SERVER_ERROR_TYPES: tuple[type[BaseException], ...] = (ResponseParserError,)
# Error codes of HTTP responses (S3's <Code>, as botocore parses it).
_THROTTLE_CODES = frozenset(
    {
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "ProvisionedThroughputExceededException",
    }
)
_TIMEOUT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException"})
_SERVER_ERROR_CODES = frozenset({"InternalError", "ServiceUnavailable"})
# Last resort for types this module cannot import (other fsspec backends): names and text.
_NAME_HINTS = (
    ("Timeout", "timeout"),
    ("SlowDown", "throttled"),
    ("Throttl", "throttled"),
    ("ServiceUnavailable", "server_error"),
    ("InternalError", "server_error"),
    ("Disconnected", "connection"),
    ("Connection", "connection"),
)
_TEXT_HINTS = (
    ("SlowDown", "throttled"),
    ("RequestTimeout", "timeout"),
    ("503", "server_error"),
    ("500 Internal", "server_error"),
)
_PERMANENT = "permanent"  # an HTTP error that retrying will not fix (403, 404, 400, ...)


@dataclass(frozen=True)
class ImageError:
    """Why an image could not be used."""

    kind: ErrorKind  # one of schemas.output.ERROR_KINDS (never 'internal' here)
    message: str


@dataclass(frozen=True)
class DecodedImage:
    """An RGB image, possibly shrunk; ``scale`` maps original pixels to ``rgb`` pixels."""

    rgb: np.ndarray  # [h, w, 3] uint8
    width: int  # original width after EXIF orientation
    height: int
    scale: float  # rgb width / original width


def _http_status_and_code(exc: BaseException) -> tuple[int | None, str]:
    """HTTP status and error code of an error that carries a response, else ``(None, "")``.

    botocore's ClientError has ``response = {"Error": {"Code"}, "ResponseMetadata":
    {"HTTPStatusCode"}}``; aiohttp's ClientResponseError has ``status``; requests-style
    errors have ``response.status_code``.
    """
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        code = str((response.get("Error") or {}).get("Code") or "")
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if not isinstance(status, int) and code.isdigit():
            status = int(code)  # botocore uses the status as the code when the body has none
        return (status if isinstance(status, int) else None), code
    for holder, attr in ((exc, "status"), (exc, "status_code"), (response, "status_code")):
        status = getattr(holder, attr, None)
        if isinstance(status, int) and 100 <= status <= 599:
            return status, ""
    return None, ""


def _typed_kind(exc: BaseException) -> str | None:
    """The retry kind of one exception by its type or HTTP status, ``_PERMANENT``, or None."""
    status, code = _http_status_and_code(exc)
    if status is not None or code:
        if code in _THROTTLE_CODES or status == 429:
            return "throttled"
        if code in _TIMEOUT_CODES or status == 408:
            return "timeout"
        if code in _SERVER_ERROR_CODES or (status is not None and status >= 500):
            return "server_error"
        return _PERMANENT
    if isinstance(exc, _TIMEOUT_TYPES):
        return "timeout"
    if isinstance(exc, _CONNECTION_TYPES):
        return "connection"
    if isinstance(exc, _SERVER_ERROR_TYPES):
        return "server_error"
    return None


def retry_kind(exc: BaseException) -> str | None:
    """Which ``RETRY_KINDS`` a storage error is, or None when retrying it will not help.

    s3fs wraps botocore's errors (``OSError(EBUSY)`` with the ClientError as its cause), so
    the error and then its causes are looked at, by type and status first; names and message
    text are the fallback for error types of backends this module does not know.
    """
    chain = [exc, *_causes(exc)]
    for item in chain:
        kind = _typed_kind(item)
        if kind is not None:
            return None if kind == _PERMANENT else kind
    for item in chain:
        name = type(item).__name__
        for hint, kind in _NAME_HINTS:
            if hint in name:
                return kind
    text = str(exc)
    for hint, kind in _TEXT_HINTS:
        if hint in text:
            return kind
    return None


def _causes(exc: BaseException) -> list[BaseException]:
    out = []
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        out.append(exc)
        if len(out) > 8:
            break
    return out


def _retries_text(retries: Counter[str]) -> str:
    total = sum(retries.values())
    detail = ", ".join(f"{kind} {retries[kind]}" for kind in RETRY_KINDS if retries[kind])
    return f"{total} {'retry' if total == 1 else 'retries'}" + (f" ({detail})" if detail else "")


def fetch_bytes(
    fs: fsspec.AbstractFileSystem,
    path: str,
    spec: DecodeSpec,
    retries: Counter[str] | None = None,
) -> bytes | ImageError:
    """Read an object, retrying transient storage errors with exponential backoff.

    At most ``spec.retries`` retries, each added to ``retries`` under its kind (one of
    ``RETRY_KINDS``). The bound and the counts are exact only when ``fs`` makes one attempt
    per call (``pipeline.store.storage.image_filesystem_for``).
    """
    counted: Counter[str] = retries if retries is not None else Counter()
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
            kind = retry_kind(exc)
            if kind is not None and attempt < spec.retries:
                counted[kind] += 1
                time.sleep(delay)
                delay *= 2
                continue
            error = f"{type(exc).__name__}: {exc}"
            if kind is not None:
                return ImageError(
                    "storage", f"gave up after {_retries_text(counted)}; last error: {error}"
                )
            if counted:
                error += f" (after {_retries_text(counted)})"
            return ImageError("storage", error)
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
            # Our own cap below is the guard, checked on the header before any pixel is
            # decoded. Pillow's would fire first, and above 2x its limit it quotes that
            # doubled figure, not the configured one.
            Image.MAX_IMAGE_PIXELS = None
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
    fs: fsspec.AbstractFileSystem,
    path: str,
    spec: DecodeSpec,
    retries: Counter[str] | None = None,
) -> DecodedImage | ImageError:
    """Fetch ``path`` from ``fs`` and decode it; never raises for bad data.

    ``retries`` receives the storage retries the fetch needed, by kind (see ``fetch_bytes``).
    """
    data = fetch_bytes(fs, path, spec, retries)
    if isinstance(data, ImageError):
        return data
    return decode_image(data, spec)

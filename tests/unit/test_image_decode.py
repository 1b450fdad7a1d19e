"""Fetch and decode: every odd input becomes either RGB pixels or an error kind, never an exception."""

from __future__ import annotations

import io

import fsspec
import fsspec.implementations.memory
import numpy as np
import pytest
from PIL import Image

from pipeline.store.fetch import DecodedImage, ImageError, decode_image, fetch_and_decode
from schemas.spec import DecodeSpec
from tests.helpers import png_claiming_size

SPEC = DecodeSpec()


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@pytest.mark.parametrize(
    "mode, fmt",
    [
        ("L", "PNG"),
        ("LA", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("RGB", "JPEG"),
        ("RGB", "WEBP"),
        ("1", "PNG"),
    ],
)
def test_every_mode_becomes_uint8_rgb(mode, fmt):
    img = Image.new(mode, (40, 30))
    result = decode_image(encode(img, fmt), SPEC)
    assert isinstance(result, DecodedImage), result
    assert result.rgb.shape == (30, 40, 3) and result.rgb.dtype == np.uint8
    assert (result.width, result.height) == (40, 30)


def test_sixteen_bit_values_are_rescaled_not_clipped():
    values = np.array([[0, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(values)  # Pillow picks I;16 for uint16
    result = decode_image(encode(img, "PNG"), SPEC)
    assert isinstance(result, DecodedImage)
    assert result.rgb[0, :, 0].tolist() == [0, 128, 255]


def test_exif_orientation_is_applied_and_size_reported_upright():
    img = Image.new("RGB", (60, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    result = decode_image(encode(img, "JPEG", exif=exif.tobytes(), quality=95), SPEC)
    assert isinstance(result, DecodedImage)
    assert (result.width, result.height) == (20, 60)
    assert result.rgb.shape == (60, 20, 3)
    assert result.rgb[2, 10, 2] > 200  # the blue strip is now at the top


def test_large_images_are_shrunk_to_max_side_with_their_scale():
    img = Image.new("RGB", (3000, 1500), (10, 200, 30))
    result = decode_image(encode(img, "JPEG"), DecodeSpec(max_side=750))
    assert isinstance(result, DecodedImage)
    assert max(result.rgb.shape[:2]) == 750
    assert (result.width, result.height) == (3000, 1500)
    assert result.scale == pytest.approx(0.25)


@pytest.mark.parametrize(
    "data, kind",
    [
        (b"", "unreadable"),
        (b"this is a text file, not an image\n", "unreadable"),
        (png_claiming_size(40000, 40000), "too_large"),
    ],
    ids=["zero-bytes", "text", "png-bomb-header"],
)
def test_bad_bytes_become_error_kinds(data, kind):
    result = decode_image(data, SPEC)
    assert isinstance(result, ImageError)
    assert result.kind == kind and result.message


def test_truncated_jpeg_is_unreadable():
    data = encode(Image.effect_noise((200, 200), 50).convert("RGB"), "JPEG")
    result = decode_image(data[: len(data) // 2], SPEC)
    assert isinstance(result, ImageError) and result.kind == "unreadable"


def test_missing_and_oversized_objects(tmp_path):
    fs = fsspec.filesystem("file")
    assert fetch_and_decode(fs, str(tmp_path / "nope.jpg"), SPEC).kind == "missing"
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff" * 2048)
    result = fetch_and_decode(fs, str(big), DecodeSpec(max_bytes=1024))
    assert result.kind == "too_large"
    assert fetch_and_decode(fs, str(tmp_path), SPEC).kind in ("unsupported", "unreadable")


class FlakyMemoryFS(fsspec.implementations.memory.MemoryFileSystem):
    """A real in-memory filesystem whose first ``failures`` reads fail like a dropped connection."""

    def __init__(self, failures: int, error: type[Exception] = ConnectionError):
        super().__init__()
        self.failures, self.error, self.calls = failures, error, 0

    def _open(self, path, mode="rb", **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error("connection reset by peer")
        return super()._open(path, mode, **kwargs)


def _flaky_fs_with_image(failures: int, error: type[Exception] = ConnectionError) -> FlakyMemoryFS:
    fs = FlakyMemoryFS(0, error)
    fs.pipe("/bucket/a.jpg", encode(Image.new("RGB", (8, 6)), "JPEG"))
    fs.failures, fs.calls = failures, 0
    return fs


def test_transient_storage_errors_are_retried_with_backoff():
    fs = _flaky_fs_with_image(failures=2)
    result = fetch_and_decode(fs, "/bucket/a.jpg", DecodeSpec(retries=3, retry_backoff_s=0.0))
    assert isinstance(result, DecodedImage) and fs.calls == 3


def test_storage_errors_become_error_rows_once_retries_run_out():
    fs = _flaky_fs_with_image(failures=10)
    result = fetch_and_decode(fs, "/bucket/a.jpg", DecodeSpec(retries=2, retry_backoff_s=0.0))
    assert isinstance(result, ImageError) and result.kind == "storage"
    assert fs.calls == 3 and "connection reset" in result.message


def test_permanent_errors_are_not_retried():
    fs = _flaky_fs_with_image(failures=10, error=PermissionError)
    result = fetch_and_decode(fs, "/bucket/a.jpg", DecodeSpec(retries=5, retry_backoff_s=0.0))
    assert result.kind == "storage" and "access denied" in result.message and fs.calls == 1


@pytest.mark.parametrize("size", [(40000, 40000), (1100, 1000)])
def test_pixel_cap_message_quotes_the_configured_limit(size):
    # Above 2x its limit Pillow's own guard fired first and quoted the doubled figure.
    result = decode_image(png_claiming_size(*size), DecodeSpec(max_pixels=1_000_000))
    assert isinstance(result, ImageError) and result.kind == "too_large"
    assert f"{size[0]}x{size[1]} = {size[0] * size[1]} pixels; limit 1000000" == result.message

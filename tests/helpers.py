"""Test inputs the project makes itself: small JPEGs and deliberately broken objects."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw

REPO_ROOT = Path(__file__).resolve().parents[1]


class StageWeights(NamedTuple):
    """What a job's fingerprint reads of a resolved stage: where its weights came from and
    their SHA-256 (``model.networks.resolve.ResolvedStage`` has both)."""

    source: str
    sha256: str | None


def synthetic_jpeg(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A small JPEG with a few stick figures on a noisy background; deterministic per seed."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(60, 200, size=(height, width, 3), dtype=np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.2, 0.8) * width, rng.uniform(0.3, 0.7) * height
        s = rng.uniform(0.15, 0.3) * height
        color = tuple(int(c) for c in rng.integers(0, 255, 3))
        draw.ellipse((cx - s / 4, cy - s, cx + s / 4, cy - s / 2), fill=color)
        draw.line((cx, cy - s / 2, cx, cy + s / 2), fill=color, width=3)
        draw.line((cx - s / 2, cy - s / 4, cx + s / 2, cy - s / 4), fill=color, width=3)
        draw.line((cx, cy + s / 2, cx - s / 3, cy + s), fill=color, width=3)
        draw.line((cx, cy + s / 2, cx + s / 3, cy + s), fill=color, width=3)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (valid CRC) but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4))
        + chunk(b"IEND", b"")
    )


def corrupt_objects() -> dict[str, tuple[bytes, str]]:
    """Broken 'images' by file name, each with the error kind a job must report for it."""
    good = synthetic_jpeg(999)
    return {
        "zero_bytes.jpg": (b"", "unreadable"),
        "truncated.jpg": (good[: len(good) // 3], "unreadable"),
        "text_file.jpg": (b"name,age\nalice,3\n", "unreadable"),
        "bomb_40000x40000.png": (png_claiming_size(40000, 40000), "too_large"),
    }


def write_images(folder: Path, count: int) -> None:
    """``count`` synthetic JPEGs named ``img_NNN.jpg`` in a new ``folder``."""
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"img_{i:03d}.jpg").write_bytes(synthetic_jpeg(i))


def write_job_spec(folder: Path, job_id: str, images: Path, extra: str = "") -> Path:
    """``folder/job.yaml`` for ``images`` with output ``folder/out``; ``extra`` is more YAML."""
    spec = folder / "job.yaml"
    spec.write_text(f"job_id: {job_id}\ninputs: ['{images}']\noutput: '{folder / 'out'}'\n{extra}")
    return spec


def cli_command(*args: str) -> list[str]:
    """The ``detpose`` command line, run with this interpreter."""
    return [sys.executable, "-m", "jobs.cli", *args]


def cli_env() -> dict[str, str]:
    """The environment a user's shell would give ``detpose``: no cluster address, repo importable."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONPATH": str(REPO_ROOT)}


def run_cli(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``detpose ARGS`` to completion, capturing its output."""
    return subprocess.run(
        cli_command(*args), env=cli_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )

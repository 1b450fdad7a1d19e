"""Progress of a running job, read from the Parquet files it has durably written.

Counting written rows (from Parquet footers) rather than in-flight batches means the
figure never runs ahead of what a crash would keep.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import fsspec
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


def count_written_rows(
    fs: fsspec.AbstractFileSystem,
    folder: str,
    cache: dict[tuple[str, int], int],
    name_prefix: str = "",
) -> int:
    """Rows in the complete Parquet files in ``folder`` whose names start with ``name_prefix``.

    ``cache`` keeps the footers already read.
    """
    if not fs.exists(folder):
        return 0
    total = 0
    for info in fs.ls(folder, detail=True):
        name, size = info["name"], int(info.get("size") or 0)
        if not name.endswith(".parquet") or not name.rsplit("/", 1)[-1].startswith(name_prefix):
            continue
        key = (name, size)
        if key not in cache:
            try:
                with fs.open(name, "rb") as fh:
                    cache[key] = pq.ParquetFile(fh).metadata.num_rows
            except Exception:  # still being written: count it next time
                continue
        total += cache[key]
    return total


def format_eta(seconds: float) -> str:
    """``1h02m03s`` / ``4m05s`` / ``6s``."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def progress_line(done: int, total: int, elapsed_s: float) -> str:
    """``done/total images (pct), rate images/s, ETA``."""
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    pct = 100.0 * done / total if total else 100.0
    eta = format_eta((total - done) / rate) if rate > 0 else "unknown"
    return f"{done}/{total} images ({pct:.1f}%), {rate:.2f} images/s, ETA {eta}"


class ProgressReporter:
    """A daemon thread that reports written images every ``interval_s`` until stopped."""

    def __init__(
        self,
        fs: fsspec.AbstractFileSystem,
        folder: str,
        total: int,
        interval_s: float = 10.0,
        name_prefix: str = "",
        emit: Callable[[str], None] | None = None,
    ) -> None:
        self._fs, self._folder, self._total = fs, folder, total
        self._prefix = name_prefix
        self._interval = interval_s
        self._emit = emit or (lambda line: logger.info("progress: %s", line))
        self._stop = threading.Event()
        self._cache: dict[tuple[str, int], int] = {}
        self._start = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="detpose-progress", daemon=True)

    def __enter__(self) -> ProgressReporter:
        self._start = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                done = count_written_rows(self._fs, self._folder, self._cache, self._prefix)
            except Exception as exc:  # progress must never break the job
                logger.debug("progress check failed: %s", exc)
                continue
            self._emit(progress_line(done, self._total, time.monotonic() - self._start))

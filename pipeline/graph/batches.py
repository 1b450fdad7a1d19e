"""Batches as the stages pass them: a dict of numpy columns, one row per image.

Helpers every stage uses to check its input, find the rows still ``ok``, and turn one
image's failure into that image's error row instead of a failed batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np

from schemas.output import STATUS_ERROR, STATUS_OK

Batch = dict[str, np.ndarray]
T = TypeVar("T")
R = TypeVar("R")


def require_columns(batch: Batch, columns: tuple[str, ...], stage: str) -> None:
    """Fail with a readable message when an upstream stage did not provide ``columns``."""
    missing = [c for c in columns if c not in batch]
    if missing:
        raise KeyError(f"[internal] {stage} needs columns {missing}; got {sorted(batch)}")


def ok_rows(batch: Batch) -> np.ndarray:
    """Indices of the rows still ``ok``."""
    return np.flatnonzero(batch["status"] == STATUS_OK)


def per_image_or_isolated(run: Callable[[list[T]], list[R]], items: list[T]) -> list[R | Exception]:
    """``run(items)`` in one call; if that raises, each item alone, keeping each one's failure.

    One bad image (or an out-of-memory batch) must cost at most that image, never the job.
    """
    try:
        return list(run(items))
    except Exception:
        results: list[R | Exception] = []
        for item in items:
            try:
                results.append(run([item])[0])
            except Exception as exc:
                results.append(exc)
        return results


def map_ok_rows(
    run: Callable[[list[T]], list[R]], batch: Batch, item: Callable[[int], T]
) -> tuple[list[tuple[int, R]], dict[int, Exception]]:
    """A stage's work on the ok rows of ``batch``: ``run`` on every row's ``item(i)`` at once
    (``per_image_or_isolated``); returns ``(row, result)`` of each success and the failures
    by row, for ``with_internal_errors``."""
    rows = ok_rows(batch)
    done: list[tuple[int, R]] = []
    failures: dict[int, Exception] = {}
    for i, result in zip(rows, per_image_or_isolated(run, [item(i) for i in rows]), strict=True):
        if isinstance(result, Exception):
            failures[i] = result
        else:
            done.append((i, result))
    return done, failures


def with_internal_errors(batch: Batch, failures: dict[int, Exception], stage: str) -> Batch:
    """``batch`` with rows ``failures`` turned into ``internal`` error rows (batches are read-only)."""
    if not failures:
        return batch
    status = batch["status"].astype(object).copy()
    kinds = batch["error_kind"].astype(object).copy()
    messages = batch["error_message"].astype(object).copy()
    for i, exc in failures.items():
        status[i], kinds[i] = STATUS_ERROR, "internal"
        messages[i] = f"[internal] {stage} failed on this image: {type(exc).__name__}: {exc}"
    return {**batch, "status": status, "error_kind": kinds, "error_message": messages}


def ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of arrays (Ray Data stores it as a variable-shaped tensor column)."""
    out = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        out[i] = array
    return out

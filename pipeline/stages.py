"""The stateless Ray Data stages (tasks): fetch+decode and filtering, plus row assembly.

Each stage maps a numpy batch (a dict of columns) to a new batch, and every row that
enters a stage leaves it: error rows pass through untouched. This module must not import
torch: task workers that only decode or filter then stay small (the model stages, which
do need it, live in ``pipeline/actors.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from model.filtering import filter_proposals
from model.keypoints import NUM_KEYPOINTS
from model.types import CoarseProposals, FilterCounts
from pipeline.decode import DecodedImage, fetch_and_decode
from pipeline.storage import image_filesystem_for, image_id_for
from schemas.filtering import FilterSpec
from schemas.output import (
    ANNOTATION_SCHEMA,
    COUNT_FIELDS,
    ORIGIN_DETECTED,
    ORIGIN_RECOVERED,
    RETRY_KINDS,
    STATUS_ERROR,
    STATUS_OK,
)
from schemas.spec import DecodeSpec, StorageSpec

Batch = dict[str, np.ndarray]
T = TypeVar("T")
R = TypeVar("R")
# Counters the filter produces per image; the refiner adds ``refinement_runs``.
FILTER_COUNT_FIELDS = tuple(f.name for f in fields(FilterCounts))
# Per-kind storage retries of each row's fetch, carried from decode to the output row.
RETRY_COLUMNS = tuple(f"storage_retries_{kind}" for kind in RETRY_KINDS)
_EMPTY_IMAGE = np.zeros((1, 1, 3), dtype=np.uint8)


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


# -- fetch + decode (tasks) ------------------------------------------------------------------


def decode_batch(batch: Batch, decode: DecodeSpec, storage: StorageSpec) -> Batch:
    """URIs → decoded images, or error rows with a kind and a message.

    Every row, ok or not, carries the storage retries its fetch needed (``RETRY_COLUMNS``).
    """
    require_columns(batch, ("uri",), "decode")
    uris = [str(u) for u in batch["uri"]]
    rows: dict[str, list[Any]] = {
        k: [] for k in ("image_id", "uri", "status", "error_kind", "error_message", "width",
                        "height", "scale", "image", *RETRY_COLUMNS)
    }  # fmt: skip
    for uri in uris:
        retries: Counter[str] = Counter()
        try:
            fs, path = image_filesystem_for(uri, storage)
            result = fetch_and_decode(fs, path, decode, retries)
        except Exception as exc:  # a bad URI must become a row, not a failed task
            result = None
            kind, message = "storage", f"{type(exc).__name__}: {exc}"
        rows["image_id"].append(image_id_for(uri))
        rows["uri"].append(uri)
        for column, retry_kind in zip(RETRY_COLUMNS, RETRY_KINDS, strict=True):
            rows[column].append(retries[retry_kind])
        if isinstance(result, DecodedImage):
            rows["status"].append(STATUS_OK)
            rows["error_kind"].append("")
            rows["error_message"].append("")
            rows["width"].append(result.width)
            rows["height"].append(result.height)
            rows["scale"].append(result.scale)
            rows["image"].append(result.rgb)
            continue
        if result is not None:
            kind, message = result.kind, result.message
        rows["status"].append(STATUS_ERROR)
        rows["error_kind"].append(kind)
        rows["error_message"].append(message)
        rows["width"].append(-1)
        rows["height"].append(-1)
        rows["scale"].append(0.0)
        rows["image"].append(_EMPTY_IMAGE)
    out = {k: np.array(v) for k, v in rows.items() if k != "image"}
    out.update({column: np.array(rows[column], np.int32) for column in RETRY_COLUMNS})
    out["image"] = _ragged(rows["image"])
    return out


def _ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """An object array of arrays (Ray Data stores it as a variable-shaped tensor column)."""
    out = np.empty(len(arrays), dtype=object)
    for i, array in enumerate(arrays):
        out[i] = array
    return out


# -- stage 2: filtering (tasks) ----------------------------------------------------------------


def filter_batch(batch: Batch, spec: FilterSpec) -> Batch:
    """Algorithm 1 (or a baseline) per image; persons padded to ``spec.max_persons``."""
    require_columns(
        batch, ("status", "image", "prop_boxes", "prop_scores", "peaks", "limb_scores"), "filter"
    )
    n, m = len(batch["status"]), spec.max_persons
    out = {
        "person_boxes": np.zeros((n, m, 4), np.float32),
        "person_box_scores": np.zeros((n, m), np.float32),
        "person_coarse": np.zeros((n, m, NUM_KEYPOINTS, 3), np.float32),
        "person_recovered": np.zeros((n, m), bool),
        "num_persons": np.zeros(n, np.int32),
        **{f"count_{name}": np.zeros(n, np.int32) for name in FILTER_COUNT_FIELDS},
    }
    failures: dict[int, Exception] = {}
    for i in ok_rows(batch):
        image = batch["image"][i]
        try:
            props = CoarseProposals(
                boxes_xyxy=batch["prop_boxes"][i],
                box_scores=batch["prop_scores"][i],
                peaks_xys=batch["peaks"][i],
                limb_scores=batch["limb_scores"][i],
            )
            persons = filter_proposals(props, spec, (image.shape[1], image.shape[0]))
        except Exception as exc:
            failures[i] = exc
            continue
        k = len(persons.box_scores)
        out["person_boxes"][i, :k] = persons.boxes_xyxy
        out["person_box_scores"][i, :k] = persons.box_scores
        out["person_coarse"][i, :k] = persons.coarse_kpts_xys
        out["person_recovered"][i, :k] = persons.recovered
        out["num_persons"][i] = k
        for name, value in persons.counts.as_dict().items():
            out[f"count_{name}"][i] = value
    keep = {
        k: v
        for k, v in batch.items()
        if k not in ("prop_boxes", "prop_scores", "peaks", "limb_scores")
    }
    return with_internal_errors({**keep, **out}, failures, "filter")


def person_records(
    batch: Batch, i: int, kpts: np.ndarray, pose_scores: np.ndarray
) -> list[dict[str, Any]]:
    """Persons of row ``i`` in original-image pixels (the decoded copy may be smaller)."""
    scale = float(batch["scale"][i])
    records = []
    for j in range(len(pose_scores)):
        x1, y1, x2, y2 = (batch["person_boxes"][i, j] / scale).tolist()
        kp = kpts[j].astype(np.float64).copy()
        kp[:, :2] /= scale
        records.append(
            {
                "box_xywh": [x1, y1, x2 - x1, y2 - y1],
                "box_score": float(batch["person_box_scores"][i, j]),
                "keypoints": kp.reshape(-1).tolist(),
                "pose_score": float(pose_scores[j]),
                "origin": ORIGIN_RECOVERED if batch["person_recovered"][i, j] else ORIGIN_DETECTED,
            }
        )
    return records


def annotation_table(
    batch: Batch, persons: list[list[dict[str, Any]]], runs: np.ndarray
) -> pa.Table:
    """The final rows of a batch in ``ANNOTATION_SCHEMA``."""
    require_columns(batch, RETRY_COLUMNS, "output")
    ok = batch["status"] == STATUS_OK
    counts = {name: batch[f"count_{name}"].astype(np.int32) for name in FILTER_COUNT_FIELDS}
    counts["refinement_runs"] = runs
    return pa.table(
        {
            "image_id": pa.array(batch["image_id"].astype(np.int64)),
            "uri": pa.array([str(u) for u in batch["uri"]]),
            "width": pa.array(np.where(ok, batch["width"], 0).astype(np.int32), mask=~ok),
            "height": pa.array(np.where(ok, batch["height"], 0).astype(np.int32), mask=~ok),
            "status": pa.array([str(s) for s in batch["status"]]),
            "error_kind": pa.array(
                [None if o else str(k) for o, k in zip(ok, batch["error_kind"], strict=True)],
                pa.string(),
            ),
            "error_message": pa.array(
                [None if o else str(m) for o, m in zip(ok, batch["error_message"], strict=True)],
                pa.string(),
            ),
            "persons": pa.array(persons, ANNOTATION_SCHEMA.field("persons").type),
            "counts": pa.StructArray.from_arrays(
                [pa.array(counts[name], pa.int32()) for name in COUNT_FIELDS],
                names=list(COUNT_FIELDS),
            ),
            "storage_retries": pa.StructArray.from_arrays(
                [pa.array(batch[column].astype(np.int32), pa.int32()) for column in RETRY_COLUMNS],
                names=list(RETRY_KINDS),
            ),
        },
        schema=ANNOTATION_SCHEMA,
    )

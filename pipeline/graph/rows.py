"""Output rows: the model stages' results for a batch assembled into ``ANNOTATION_SCHEMA``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from model.codecs.coords import decoded_to_original
from pipeline.graph.batches import Batch, require_columns
from schemas.output import (
    ANNOTATION_SCHEMA,
    COUNT_FIELDS,
    EVAL_ROW_SCHEMA,
    EXPOSURE_FIELDS,
    EXPOSURE_TYPE,
    FILTER_COUNT_FIELDS,
    ORIGIN_DETECTED,
    ORIGIN_RECOVERED,
    RETRY_KINDS,
    STATUS_OK,
)

# Per-kind storage retries of each row's fetch, carried from decode to the output row.
RETRY_COLUMNS = tuple(f"storage_retries_{kind}" for kind in RETRY_KINDS)
# What decode measured of each image's exposure and did about it (``exposure`` of a row).
EXPOSURE_COLUMNS = tuple(f"exposure_{name}" for name in EXPOSURE_FIELDS)
EXPOSURE_FLOATS = ("exposure_luma", "exposure_noise", "exposure_gain")
# exposure_noise below zero: not measured (the image is not dark).
NOT_MEASURED = -1.0


def person_records(
    batch: Batch, i: int, kpts: np.ndarray, pose_scores: np.ndarray, keep: np.ndarray | None = None
) -> list[dict[str, Any]]:
    """Persons of row ``i`` in original-image pixels (the decoded copy may be smaller).

    ``keep``: ``[N]`` bool, the persons to write (default: all).
    """
    scale = float(batch["scale"][i])
    records = []
    for j in range(len(pose_scores)):
        if keep is not None and not keep[j]:
            continue
        x1, y1, x2, y2 = decoded_to_original(batch["person_boxes"][i, j], scale).tolist()
        kp = kpts[j].astype(np.float64).copy()
        kp[:, :2] = decoded_to_original(kp[:, :2], scale)
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
    batch: Batch,
    persons: list[list[dict[str, Any]]],
    runs: np.ndarray,
    removed: np.ndarray | None = None,
) -> pa.Table:
    """The final rows of a batch in ``ANNOTATION_SCHEMA``; an evaluation's rows (one per image
    and filter mode) carry ``filter_mode`` too (``EVAL_ROW_SCHEMA``).

    ``runs``: refiner passes per row; ``removed``: recovered duplicates dropped per row
    (default: none).
    """
    require_columns(batch, RETRY_COLUMNS, "output")
    ok = batch["status"] == STATUS_OK
    counts = {name: batch[f"count_{name}"].astype(np.int32) for name in FILTER_COUNT_FIELDS}
    counts["refinement_runs"] = runs
    counts["recovered_duplicates_removed"] = (
        np.zeros(len(runs), np.int32) if removed is None else removed
    )
    # Rows whose boxes were given (no stage 1) ran no stage-1 input.
    counts["stage1_inputs"] = batch.get("count_stage1_inputs", np.zeros(len(runs), np.int32))
    table = pa.table(
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
            "exposure": _exposure(batch, ok),
        },
        schema=ANNOTATION_SCHEMA,
    )
    if "filter_mode" in batch:
        modes = pa.array([str(m) for m in batch["filter_mode"]], pa.string())
        table = table.append_column(EVAL_ROW_SCHEMA.field("filter_mode"), modes)
    return table


def _exposure(batch: Batch, ok: np.ndarray) -> pa.StructArray:
    """Each row's ``exposure`` struct; null for error rows (and batches that lack it, such
    as rows made without decode)."""
    if not all(column in batch for column in EXPOSURE_COLUMNS):
        return pa.nulls(len(ok), EXPOSURE_TYPE)
    children = []
    for column, field in zip(EXPOSURE_COLUMNS, EXPOSURE_TYPE, strict=True):
        values = batch[column].astype(field.type.to_pandas_dtype())
        unknown = values < 0 if field.nullable else None
        children.append(pa.array(values, field.type, mask=unknown))
    return pa.StructArray.from_arrays(children, fields=list(EXPOSURE_TYPE), mask=pa.array(~ok))

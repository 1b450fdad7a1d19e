"""The statistics' per-row metrics and the exactly-once proof, on Arrow tables (no Ray)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from pipeline.store.stats import (
    METRIC_COLUMNS,
    STATS_COLUMNS,
    JobCounts,
    exactly_once_violations,
    listed_metrics,
    per_uri_summary,
    row_metrics,
)
from schemas.output import ANNOTATION_SCHEMA, COUNT_FIELDS, RETRY_KINDS


def annotation_rows(rows: list[dict]) -> pa.Table:
    """Rows in ``ANNOTATION_SCHEMA`` (``STATS_COLUMNS`` only) from a few given fields."""
    person = {
        "box_xywh": [0.0, 0.0, 1.0, 1.0],
        "box_score": 0.9,
        "keypoints": [0.0] * 51,
        "pose_score": 0.5,
        "origin": "detected",
    }
    full = [
        {
            "uri": r["uri"],
            "status": r.get("status", "ok"),
            "error_kind": r.get("error_kind"),
            "persons": [person] * r.get("persons", 0),
            "counts": {name: r.get(name, 0) for name in COUNT_FIELDS},
            "storage_retries": r.get("retries", dict.fromkeys(RETRY_KINDS, 0)),
        }
        for r in rows
    ]
    schema = pa.schema([ANNOTATION_SCHEMA.field(c) for c in STATS_COLUMNS])
    return pa.Table.from_pylist(full, schema=schema)


def test_row_metrics_count_each_rows_status_kind_persons_counters_and_retries():
    table = annotation_rows(
        [
            {"uri": "a", "persons": 2, "accepted": 2, "refinement_runs": 2},
            {"uri": "b", "status": "error", "error_kind": "missing"},
            {"uri": "c", "status": "error", "error_kind": "storage", "retries": None},
            {
                "uri": "d",
                "retries": {"throttled": 1, "server_error": 0, "connection": 2, "timeout": 0},
            },
        ]
    )
    metrics = row_metrics(table)
    assert metrics.column_names == ["uri", "listed", *METRIC_COLUMNS]
    assert metrics.column("listed").to_pylist() == [0, 0, 0, 0]
    assert all(metrics.column(c).type == pa.int64() for c in METRIC_COLUMNS)
    sums = {c: pc.sum(metrics.column(c)).as_py() for c in METRIC_COLUMNS}
    assert (sums["rows"], sums["ok"], sums["error"]) == (4, 2, 2)
    assert (sums["error_missing"], sums["error_storage"], sums["error_internal"]) == (1, 1, 0)
    assert (sums["persons"], sums["accepted"], sums["refinement_runs"]) == (2, 2, 2)
    # A null storage_retries (rows written before the column existed) counts as none.
    assert (sums["retries_throttled"], sums["retries_connection"]) == (1, 2)
    inputs = listed_metrics(pa.table({"uri": ["a"]}))
    assert inputs.schema == metrics.schema
    assert inputs.to_pylist() == [{"uri": "a", "listed": 1, **dict.fromkeys(METRIC_COLUMNS, 0)}]


def per_uri(rows: list[tuple[str, int, int, int]]) -> pa.Table:
    """Per-URI totals as the aggregation makes them: (uri, listed, rows, ok)."""
    table = pa.table(
        {
            "uri": [r[0] for r in rows],
            "listed": pa.array([r[1] for r in rows], pa.int8()),
        }
    )
    for name in METRIC_COLUMNS:
        values = {"rows": [r[2] for r in rows], "ok": [r[3] for r in rows]}.get(name)
        table = table.append_column(name, pa.array(values or [0] * len(rows), pa.int64()))
    return table


def test_per_uri_summary_finds_missing_duplicated_and_stale_rows():
    summary = per_uri_summary(
        per_uri(
            [
                ("s3://b/once.jpg", 1, 1, 1),
                ("s3://b/z-missing.jpg", 1, 0, 0),
                ("s3://b/a-missing.jpg", 1, 0, 0),
                ("s3://b/twice.jpg", 1, 2, 2),
                ("s3://b/stale.jpg", 0, 3, 3),
            ]
        )
    ).to_pylist()[0]
    assert summary["images_in"] == 4
    assert (summary["missing"], summary["missing_example"]) == (2, "s3://b/a-missing.jpg")
    assert (summary["duplicated"], summary["duplicated_example"]) == (1, "s3://b/twice.jpg")
    assert summary["stale_rows"] == 3
    # Totals describe the inputs' rows only: the stale rows are not counted.
    assert (summary["rows"], summary["ok"]) == (3, 3)


def test_exactly_once_holds():
    assert exactly_once_violations(JobCounts(images_in=2, totals={})) == []


def test_missing_and_duplicated_images_are_internal_errors():
    counts = JobCounts(
        images_in=3,
        totals={},
        missing=1,
        missing_example="c",
        duplicated=1,
        duplicated_example="a",
    )
    notes = exactly_once_violations(counts)
    assert len(notes) == 2 and all(n.startswith("[internal]") for n in notes)
    assert "1 image(s) without a row, e.g. c" in notes[0]
    assert "1 image(s) with several rows, e.g. a" in notes[1]

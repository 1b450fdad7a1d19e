"""Per-job statistics: counts rebuilt from the written rows, timing from Ray Data's summary.

Counting from the output (not from in-flight counters) is what lets ``stats.json`` prove
that every input image left exactly one row. The rows are counted by Ray tasks, grouped by
URI against the inputs (``count_job_rows``), so the driver never holds the rows or the URIs.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from ray.data import Dataset
from ray.data.aggregate import Max, Sum

from pipeline.store.sources import LISTED, summarise, summary_table
from pipeline.store.storage import filesystem_for
from schemas.output import (
    COUNT_FIELDS,
    ERROR_KINDS,
    RETRY_KINDS,
    STATUS_ERROR,
    STATUS_OK,
    JobStats,
    RunRecord,
    StageStats,
)
from schemas.spec import JobSpec

_VERSIONED = ("detpose", "torch", "ray", "pyarrow", "numpy", "pillow", "pydantic", "s3fs", "fsspec")


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages that shape results."""
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def stage_stats(ds: Any, rows_written: int) -> tuple[list[StageStats], str]:
    """Per-operator busy seconds and rows/s, plus Ray Data's stats text, for an executed dataset.

    ``rows_written``: annotation rows this run wrote. Ray Data's write operator emits one
    summary row per written block, so its own row count says nothing about images.
    """
    if ds is None:
        return [], ""
    try:
        summary = ds.get_stats_summary()
        text = summary.to_string()
    except Exception as exc:  # stats are best effort; the annotations are what matters
        return [], f"(Ray Data stats unavailable: {type(exc).__name__}: {exc})"
    stages: list[StageStats] = []
    seen: set[str] = set()

    def visit(node: Any) -> None:  # parents first, so stages read source → sink
        for parent in node.parents:
            visit(parent)
        for op in node.operators_stats:
            if op.operator_name in seen:
                continue
            seen.add(op.operator_name)
            busy = float(op.wall_time.sum) if op.wall_time else 0.0
            rows = int(op.output_num_rows.sum) if op.output_num_rows else 0
            if op.operator_name.startswith("Write"):
                rows = rows_written
            function = float(op.function_body_time.sum) if op.function_body_time else 0.0
            shipped = float(op.output_size_bytes.sum) if op.output_size_bytes else 0.0
            stages.append(
                StageStats(
                    name=op.operator_name,
                    busy_s=busy,
                    rows=rows,
                    rows_per_s=rows / busy if busy > 0 else 0.0,
                    function_s=min(function, busy),
                    overhead_s=max(busy - function, 0.0),
                    output_mib=shipped / 2**20,
                )
            )

    visit(summary)
    return stages, text


def accelerator_seconds(gpus_per_actor: dict[str, float], stages: list[StageStats]) -> float:
    """Busy time of each model stage times the GPUs each of its actors holds."""
    total = 0.0
    for stage in stages:
        if "CoarseStage" in stage.name:
            total += stage.busy_s * gpus_per_actor["stage1"]
        elif "RefineStage" in stage.name:
            total += stage.busy_s * gpus_per_actor["refiner"]
    return total


# Per annotation row, what the statistics add up (int64): the row itself, its status, its
# error kind, its persons, its Algorithm-1 counters and its storage retries.
METRIC_COLUMNS: tuple[str, ...] = (
    "rows",
    "ok",
    "error",
    *(f"error_{kind}" for kind in ERROR_KINDS),
    "persons",
    *COUNT_FIELDS,
    *(f"retries_{kind}" for kind in RETRY_KINDS),
)
# The annotation columns those come from.
STATS_COLUMNS = ["uri", "status", "error_kind", "persons", "counts", "storage_retries"]


def _as_int64(values: Any) -> pa.Array:
    return pc.fill_null(pc.cast(values, pa.int64()), 0)


def _metrics_table(uris: Any, listed: int, metrics: dict[str, Any]) -> pa.Table:
    n = len(uris)
    return pa.table(
        {
            "uri": uris,
            LISTED: pa.array(np.full(n, listed, np.int8)),
            **{name: _as_int64(metrics[name]) for name in METRIC_COLUMNS},
        }
    )


def row_metrics(table: pa.Table) -> pa.Table:
    """Annotation rows (``STATS_COLUMNS``) as ``uri``, ``listed`` 0 and ``METRIC_COLUMNS``."""
    status, kinds = table.column("status"), table.column("error_kind")
    is_error = pc.equal(status, STATUS_ERROR)
    counts, retries = table.column("counts"), table.column("storage_retries")
    metrics = {
        "rows": pa.array(np.ones(table.num_rows, np.int64)),
        "ok": pc.equal(status, STATUS_OK),
        "error": is_error,
        **{f"error_{k}": pc.and_(is_error, pc.equal(kinds, k)) for k in ERROR_KINDS},
        "persons": pc.list_value_length(table.column("persons")),
        **{name: pc.struct_field(counts, name) for name in COUNT_FIELDS},
        # Null in rows written before the column existed: counted as no retries.
        **{f"retries_{k}": pc.struct_field(retries, k) for k in RETRY_KINDS},
    }
    return _metrics_table(table.column("uri"), 0, metrics)


def listed_metrics(batch: pa.Table) -> pa.Table:
    """Input URIs (``uri``) as ``uri``, ``listed`` 1 and zero ``METRIC_COLUMNS``."""
    zeros = pa.array(np.zeros(batch.num_rows, np.int64))
    return _metrics_table(batch.column("uri"), 1, dict.fromkeys(METRIC_COLUMNS, zeros))


def _example(uris: pa.ChunkedArray, mask: pa.Array) -> str | None:
    return pc.min(pc.filter(uris, mask)).as_py()


def per_uri_summary(batch: pa.Table) -> pa.Table:
    """One summary row for a block of per-URI totals (``count_job_rows``): the listed URIs,
    those without a row and with several rows (with the smallest of each as an example), the
    rows of URIs not listed, and ``METRIC_COLUMNS`` summed over the listed URIs' rows."""
    if not batch.num_rows:  # an aggregation over no rows yields a block without columns
        return summary_table({"images_in": 0})
    listed = pc.equal(batch.column(LISTED), 1)
    rows, uris = batch.column("rows"), batch.column("uri")
    missing = pc.and_(listed, pc.equal(rows, 0))
    duplicated = pc.and_(listed, pc.greater(rows, 1))
    summary: dict[str, int | str | None] = {
        "images_in": int(pc.sum(listed).as_py() or 0),
        "missing": int(pc.sum(missing).as_py() or 0),
        "missing_example": _example(uris, missing),
        "duplicated": int(pc.sum(duplicated).as_py() or 0),
        "duplicated_example": _example(uris, duplicated),
        "stale_rows": int(pc.sum(pc.filter(rows, pc.invert(listed))).as_py() or 0),
    }
    for name in METRIC_COLUMNS:
        summary[name] = int(pc.sum(pc.filter(batch.column(name), listed)).as_py() or 0)
    return summary_table(summary)


@dataclass(frozen=True)
class JobCounts:
    """What a job's rows say about its inputs, from ``count_job_rows``."""

    images_in: int  # distinct input URIs
    totals: dict[str, int]  # METRIC_COLUMNS summed over the rows of input URIs
    missing: int = 0  # input URIs without a row
    missing_example: str | None = None
    duplicated: int = 0  # input URIs with several rows
    duplicated_example: str | None = None
    stale_rows: int = 0  # rows of URIs no longer among the inputs


def count_job_rows(inputs: Dataset, rows: Dataset | None, num_partitions: int) -> JobCounts:
    """Totals of the annotation rows of the input URIs, and exactly-once violations.

    ``inputs``: the input URIs (``uri``; duplicates count once). ``rows``: the job's rows
    as ``row_metrics``, or None when it has none. One hash aggregation by URI into
    ``num_partitions`` partitions totals each URI's rows; per-block summaries of those
    totals are added up on the driver, which never holds a URI list.
    """
    tagged = inputs.map_batches(listed_metrics, batch_format="pyarrow", batch_size=None)
    if rows is not None:
        tagged = tagged.union(rows)
    per_uri = tagged.groupby("uri", num_partitions=num_partitions).aggregate(
        Max(LISTED, alias_name=LISTED), *(Sum(name, alias_name=name) for name in METRIC_COLUMNS)
    )
    s = summarise(per_uri, per_uri_summary)

    def count(key: str) -> int:
        return int(s.get(key) or 0)

    return JobCounts(
        images_in=count("images_in"),
        totals={name: count(name) for name in METRIC_COLUMNS},
        missing=count("missing"),
        missing_example=s.get("missing_example"),  # type: ignore[arg-type]
        duplicated=count("duplicated"),
        duplicated_example=s.get("duplicated_example"),  # type: ignore[arg-type]
        stale_rows=count("stale_rows"),
    )


def exactly_once_violations(counts: JobCounts) -> list[str]:
    """``[internal]`` warnings unless every input URI was written exactly once."""
    notes = []
    for what, found, example in (
        ("without a row", counts.missing, counts.missing_example),
        ("with several rows", counts.duplicated, counts.duplicated_example),
    ):
        if found:
            notes.append(
                f"[internal] {found} image(s) {what}, e.g. {example}; "
                "every image must leave exactly one row"
            )
    return notes


@dataclass(frozen=True)
class RunFacts:
    """What one run of a job knows besides its output rows."""

    images_this_run: int
    dataset: Any  # the executed Ray dataset, or None when nothing was left to do
    started: datetime
    wall_s: float
    gpus_per_actor: dict[str, float]
    skipped_non_image: int = 0
    weights: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)


def build_stats(spec: JobSpec, counts: JobCounts, run: RunFacts) -> JobStats:
    """The job's statistics from its row totals (``count_job_rows``) and the executed dataset."""
    totals = counts.totals
    stages, text = stage_stats(run.dataset, run.images_this_run)
    notes = list(run.warnings)
    if counts.stale_rows:
        notes.append(
            f"{counts.stale_rows} row(s) written by earlier runs are for images no longer among "
            "the inputs; they are left in place and not counted here"
        )
    notes += exactly_once_violations(counts)
    persons = totals["persons"]
    return JobStats(
        job_id=spec.job_id,
        started_at=run.started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=run.wall_s,
        images_in=counts.images_in,
        skipped_non_image=run.skipped_non_image,
        images_ok=totals["ok"],
        images_error=totals["error"],
        errors_by_kind={
            k: totals[f"error_{k}"] for k in sorted(ERROR_KINDS) if totals[f"error_{k}"]
        },
        storage_retries={k: totals[f"retries_{k}"] for k in RETRY_KINDS},
        images_this_run=run.images_this_run,
        images_per_s=run.images_this_run / run.wall_s if run.wall_s > 0 else 0.0,
        persons=persons,
        **{name: totals[name] for name in COUNT_FIELDS},
        refinement_runs_per_person=totals["refinement_runs"] / persons if persons else 0.0,
        stages=stages,
        gpus_per_actor=run.gpus_per_actor,
        accelerator_seconds=accelerator_seconds(run.gpus_per_actor, stages),
        weights=run.weights,
        runs=run.runs,
        warnings=notes,
        ray_data_stats=text,
        spec=spec.to_public_dict(),
        versions=package_versions(),
    )


def write_stats(stats: JobStats, json_uri: str, parquet_uri: str, spec: JobSpec) -> None:
    """``stats.json`` plus a one-row Parquet twin (nested fields as JSON strings)."""
    data = stats.model_dump(mode="json")
    fs, path = filesystem_for(json_uri, spec.storage)
    with fs.open(path, "wb") as fh:
        fh.write(json.dumps(data, indent=2).encode("utf-8"))
    flat = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in data.items()}
    table = pa.table({k: [v] for k, v in flat.items()})
    fs, path = filesystem_for(parquet_uri, spec.storage)
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh)

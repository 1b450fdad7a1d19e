"""Per-job statistics: counts rebuilt from the written rows, timing from Ray Data's summary.

Counting from the output (not from in-flight counters) is what lets ``stats.json`` prove
that every input image left exactly one row.
"""

from __future__ import annotations

import json
import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.sink import read_annotations
from pipeline.storage import Listing, filesystem_for
from schemas.output import (
    COUNT_FIELDS,
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


def count_rows(table: pa.Table) -> dict[str, Any]:
    """Image, error and Algorithm-1 counts over annotation rows."""
    status = table.column("status")
    errors = table.filter(pc.equal(status, STATUS_ERROR)).column("error_kind").to_pylist()
    counts = table.column("counts")
    sums = {name: int(pc.sum(pc.struct_field(counts, name)).as_py() or 0) for name in COUNT_FIELDS}
    persons = int(pc.sum(pc.list_value_length(table.column("persons"))).as_py() or 0)
    # Null in rows written before the column existed: counted as no retries.
    retries = table.column("storage_retries")
    storage_retries = {
        kind: int(pc.sum(pc.struct_field(retries, kind)).as_py() or 0) for kind in RETRY_KINDS
    }
    return {
        "images_ok": int(pc.sum(pc.equal(status, STATUS_OK)).as_py() or 0),
        "images_error": len(errors),
        "errors_by_kind": dict(sorted(Counter(errors).items())),
        "storage_retries": storage_retries,
        "persons": persons,
        **sums,
    }


def exactly_once_violations(uris_in: list[str], uris_written: list[str]) -> list[str]:
    """``[internal]`` warnings unless every input URI was written exactly once."""
    notes = []
    written = Counter(uris_written)
    missing = set(uris_in) - written.keys()
    duplicated = sorted(u for u, n in written.items() if n > 1)
    for what, found in (("without a row", missing), ("with several rows", duplicated)):
        if found:
            notes.append(
                f"[internal] {len(found)} image(s) {what}, e.g. {sorted(found)[0]}; "
                "every image must leave exactly one row"
            )
    return notes


@dataclass(frozen=True)
class RunFacts:
    """What one run of a job knows besides its output rows."""

    listing: Listing
    images_this_run: int
    dataset: Any  # the executed Ray dataset, or None when nothing was left to do
    started: datetime
    wall_s: float
    gpus_per_actor: dict[str, float]
    weights: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    runs: list[RunRecord] = field(default_factory=list)


def build_stats(spec: JobSpec, annotations_uri: str, run: RunFacts) -> JobStats:
    """Assemble the job's statistics from its output rows and the executed dataset."""
    uris = run.listing.uris
    table = read_annotations(annotations_uri, spec.storage)
    of_inputs = pc.is_in(table.column("uri"), value_set=pa.array(uris, pa.string()))
    stale = table.num_rows - int(pc.sum(of_inputs).as_py() or 0)
    table = table.filter(of_inputs)  # the statistics describe this job's inputs
    counts = count_rows(table)
    stages, text = stage_stats(run.dataset, run.images_this_run)
    notes = list(run.warnings)
    if stale:
        notes.append(
            f"{stale} row(s) written by earlier runs are for images no longer among the inputs; "
            "they are left in place and not counted here"
        )
    notes += exactly_once_violations(uris, table.column("uri").to_pylist())
    persons = counts["persons"]
    return JobStats(
        job_id=spec.job_id,
        started_at=run.started.isoformat(timespec="seconds"),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        wall_s=run.wall_s,
        images_in=len(uris),
        skipped_non_image=len(run.listing.skipped),
        images_ok=counts["images_ok"],
        images_error=counts["images_error"],
        errors_by_kind=counts["errors_by_kind"],
        storage_retries=counts["storage_retries"],
        images_this_run=run.images_this_run,
        images_per_s=run.images_this_run / run.wall_s if run.wall_s > 0 else 0.0,
        persons=persons,
        **{name: counts[name] for name in COUNT_FIELDS},
        refinement_runs_per_person=counts["refinement_runs"] / persons if persons else 0.0,
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

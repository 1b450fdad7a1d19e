"""Where a job writes and how: deterministic Parquet parts in per-run folders, read back safely."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.errors import JobSetupError
from pipeline.store.storage import filesystem_for, storage_errors
from schemas.output import ANNOTATION_SCHEMA
from schemas.spec import JobSpec, StorageSpec, join_uri

INCOMPLETE_SUFFIX = ".incomplete"
# The names part_filename gives; any other file in annotations/ is not the job's.
_PART_NAME = re.compile(r"run-\d{3,}-part-\d{6,}-[A-Za-z0-9_-]+\.parquet")


@dataclass(frozen=True)
class JobPaths:
    """Where a job writes."""

    root: str
    annotations: str
    stats_json: str
    stats_parquet: str
    spec_yaml: str
    runs_json: str

    @classmethod
    def for_spec(cls, spec: JobSpec) -> JobPaths:
        root = join_uri(spec.output, spec.job_id)
        return cls(
            root=root,
            annotations=join_uri(root, "annotations"),
            stats_json=join_uri(root, "stats.json"),
            stats_parquet=join_uri(root, "stats.parquet"),
            spec_yaml=join_uri(root, "spec.yaml"),
            runs_json=join_uri(root, "runs.json"),
        )


def run_prefix(run_index: int) -> str:
    """File-name prefix of one run's annotation files."""
    return f"run-{run_index:03d}-"


def part_filename(run_index: int, task_index: int, write_uuid: str) -> str:
    """``run-RRR-part-TTTTTT-WRITEUUID.parquet``: run index, write task, and the write's id.

    A retried write task rewrites its own file (same run, task and write id) instead of
    adding a second copy; a later run of the job id never touches an earlier run's files.
    """
    return f"{run_prefix(run_index)}part-{task_index:06d}-{write_uuid}.parquet"


def next_run_index(annotations_uri: str, storage: StorageSpec) -> int:
    """1 + the highest run index among the files under ``annotations/`` (0 for a new job)."""
    fs, path = filesystem_for(annotations_uri, storage)
    names = [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)] if fs.exists(path) else []
    taken = [int(n[4:7]) for n in names if n.startswith("run-") and n[4:7].isdigit()]
    return max(taken, default=-1) + 1


def write_text(uri: str, text: str, storage: StorageSpec) -> None:
    """Write a small text file to any supported URI."""
    fs, path = filesystem_for(uri, storage)
    parent = path.rsplit("/", 1)[0]
    if parent:
        fs.makedirs(parent, exist_ok=True)
    with fs.open(path, "wb") as fh:
        fh.write(text.encode("utf-8"))


def is_part_file(path: str) -> bool:
    """True for an annotation file a DetPose job wrote (``run-RRR-part-TTTTTT-ID.parquet``)."""
    return bool(_PART_NAME.fullmatch(path.rsplit("/", 1)[-1]))


def _annotation_files(annotations_uri: str, storage: StorageSpec) -> tuple[object, list[str]]:
    fs, path = filesystem_for(annotations_uri, storage)
    if not fs.exists(path):
        return fs, []
    return fs, sorted(fs.find(path))


def _parquet_files(annotations_uri: str, storage: StorageSpec) -> tuple[object, list[str]]:
    fs, files = _annotation_files(annotations_uri, storage)
    return fs, [p for p in files if is_part_file(p)]


def part_files(annotations_uri: str, storage: StorageSpec) -> list[str]:
    """The job's annotation part files (paths inside ``filesystem_for(annotations_uri)``),
    sorted; a killed run's incomplete files are not among them once set aside
    (``quarantine_incomplete_files``), and foreign files never are."""
    return _parquet_files(annotations_uri, storage)[1]


def read_part_file(fs: Any, path: str, columns: list[str] | None = None) -> pa.Table:
    """``columns`` of one part file in ``ANNOTATION_SCHEMA``: a column that an older file
    lacks (``storage_retries`` before schema version 2) is read back as nulls."""
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh, columns=columns, schema=ANNOTATION_SCHEMA)


def foreign_files(annotations_uri: str, storage: StorageSpec) -> list[str]:
    """Files in ``annotations/`` that no DetPose run wrote (left alone and never read)."""
    _, files = _annotation_files(annotations_uri, storage)
    return [p for p in files if not is_part_file(p) and not p.endswith(INCOMPLETE_SUFFIX)]


def _is_complete(fs: object, path: str) -> bool:
    try:
        with fs.open(path, "rb") as fh:  # type: ignore[attr-defined]
            pq.ParquetFile(fh).metadata  # noqa: B018 - reading the footer is the check
        return True
    except Exception:
        return False


def quarantine_incomplete_files(annotations_uri: str, storage: StorageSpec) -> list[str]:
    """Rename Parquet files without a valid footer (a killed run's last writes) out of the way.

    Their images are then simply missing from the output, so a resumed run redoes them.
    Returns the paths set aside.
    """
    fs, files = _parquet_files(annotations_uri, storage)
    bad = [p for p in files if not _is_complete(fs, p)]
    for path in bad:
        fs.mv(path, path + INCOMPLETE_SUFFIX)  # type: ignore[attr-defined]
    return bad


def read_annotations(
    annotations_uri: str, storage: StorageSpec, columns: list[str] | None = None
) -> pa.Table:
    """Every annotation row under ``annotations_uri`` (all runs), in ``ANNOTATION_SCHEMA``.

    ``columns`` reads only those (a resume needs just ``uri``, not every pose).
    """
    fs, files = _parquet_files(annotations_uri, storage)
    tables = [read_part_file(fs, path, columns) for path in files]
    if tables:
        return pa.concat_tables(tables)
    empty = ANNOTATION_SCHEMA.empty_table()
    return empty.select(columns) if columns else empty


class NoAnnotationsError(JobSetupError):
    """A job folder without annotation files; the message names where it looked."""


def job_part_files(job_uri: str, storage: StorageSpec) -> tuple[Any, list[str]]:
    """The filesystem and a job's annotation part files, sorted.

    ``job_uri`` is ``OUTPUT/JOB_ID`` or its ``annotations/`` folder.

    Raises:
        NoAnnotationsError: nothing there; StorageError: the storage cannot be listed.
    """
    for uri in (join_uri(job_uri, "annotations"), job_uri):
        fs, path = filesystem_for(uri, storage)
        with storage_errors(uri, "list"):
            found = sorted(p for p in fs.find(path) if is_part_file(p)) if fs.isdir(path) else []
        if found:
            return fs, found
    raise NoAnnotationsError(
        f"no annotation files (run-RRR-part-*.parquet) under {join_uri(job_uri, 'annotations')!r}"
        "; --job is OUTPUT/JOB_ID of a detpose run"
    )

"""A job's own annotation files, read back by ``export``, ``review`` and ``eval --job``: the one
validated reader of ``OUTPUT/JOB_ID/annotations/run-*.parquet``.

Every file's footer is read before any work (a truncated file has none), and its columns
must have the types of ``schemas.output.ANNOTATION_SCHEMA``. Rows are checked as they are
read: a URI and an id on every row, a known status, and an ok row's size and persons. A
problem names the file and the row, and stops the command (exit 2): a result over fewer rows
than the job holds must never look complete. With ``allow_partial`` (``--allow-partial``) a
file that cannot be read is left out whole instead, and the result says it is partial.

A person holding a non-finite number (``NaN`` box, keypoint or score) cannot be written to
JSON; it is left out and counted, with the file and row of the first, which every command
reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import JobSetupError
from pipeline.store.sink import job_part_files, read_part_file
from pipeline.store.storage import is_storage_failure, storage_failure
from schemas.formats import MAX_IMAGE_SIDE
from schemas.output import ANNOTATION_SCHEMA, STATUS_ERROR, STATUS_OK
from schemas.spec import StorageSpec

ALLOW_PARTIAL_FLAG = "--allow-partial"
# Per person, the numbers that must be finite, and how many of each.
_PERSON_NUMBERS = (("box_xywh", 4), ("keypoints", 51), ("box_score", 1), ("pose_score", 1))
T = TypeVar("T")


class PartFileError(JobSetupError):
    """A part file that cannot be read, or holds a row that breaks the schema's rules.

    ``path`` is the file in its filesystem; ``name`` how messages show it (its URI)."""

    def __init__(self, path: str, reason: str, name: str | None = None) -> None:
        self.path, self.reason = path, reason
        super().__init__(
            f"annotation file {name or path!r}: {reason} (pass {ALLOW_PARTIAL_FLAG} to leave "
            "the file out and accept a result marked partial)"
        )


@dataclass
class PartsReport:
    """What a pass over a job's part files left out: files that could not be read (path →
    reason) and persons with non-finite numbers."""

    files: int = 0
    skipped: dict[str, str] = field(default_factory=dict)
    persons_non_finite: int = 0
    first_non_finite: str | None = None  # "FILE row R"

    @property
    def partial(self) -> bool:
        return bool(self.skipped)

    def partial_record(self) -> dict[str, Any]:
        """``{"partial": …}`` for an output file when files were left out, else nothing."""
        if not self.skipped:
            return {}
        partial = {
            "note": self.partial_note(),
            "files": self.files,
            "unreadable_files": dict(self.skipped),
        }
        return {"partial": partial}

    def partial_note(self) -> str | None:
        """``PARTIAL: 1 of 3 annotation files could not be read and were left out: …``."""
        if not self.skipped:
            return None
        listed = "; ".join(f"{path} ({reason})" for path, reason in sorted(self.skipped.items()))
        return (
            f"PARTIAL: {len(self.skipped)} of {self.files} annotation files could not be read "
            f"and were left out: {listed}"
        )

    def non_finite_note(self) -> str | None:
        if not self.persons_non_finite:
            return None
        return (
            f"left out {self.persons_non_finite} persons holding non-finite numbers (NaN or "
            f"infinity; the first in {self.first_non_finite})"
        )

    def record(self) -> dict[str, Any]:
        """The whole report as an output file records it, once the pass is done (keys only
        for what was left out)."""
        dropped = self.persons_non_finite
        return {**self.partial_record(), **({"persons_non_finite": dropped} if dropped else {})}


def _fits(actual: pa.DataType, expected: pa.DataType) -> bool:
    """``actual`` reads as ``expected``: the same type, nullability aside, and a struct may lack
    fields that ``expected`` marks nullable (counters added in later schema versions)."""
    if pa.types.is_struct(actual) and pa.types.is_struct(expected):
        wanted = {f.name: f for f in expected}
        have = {f.name: f for f in actual}
        return all(n in wanted and _fits(f.type, wanted[n].type) for n, f in have.items()) and all(
            f.nullable for n, f in wanted.items() if n not in have
        )
    if pa.types.is_fixed_size_list(actual) and pa.types.is_fixed_size_list(expected):
        return actual.list_size == expected.list_size and _fits(
            actual.value_type, expected.value_type
        )
    if pa.types.is_list(actual) and pa.types.is_list(expected):
        return _fits(actual.value_type, expected.value_type)
    return actual.equals(expected)


def schema_problem(schema: pa.Schema, columns: Sequence[str]) -> str | None:
    """Why ``schema`` does not hold every one of ``columns`` with its type; None when it does."""
    for name in columns:
        expected = ANNOTATION_SCHEMA.field(name).type
        if name not in schema.names:
            return f"no column {name!r}; not an annotation file of DetPose"
        actual = schema.field(name).type
        if not _fits(actual, expected):
            return f"column {name!r} holds {actual}, expected {expected}"
    return None


def _first(mask: np.ndarray) -> int | None:
    found = np.flatnonzero(mask)
    return int(found[0]) if found.size else None


def _row_problem(batch: pa.RecordBatch) -> tuple[int, str] | None:
    """The first row of ``batch`` that breaks a rule, and the rule; None when all keep them."""
    names = batch.schema.names
    for name in ("image_id", "uri", "status"):
        if (
            name in names
            and (row := _first(batch.column(name).is_null().to_numpy(zero_copy_only=False)))
            is not None
        ):
            return row, f"{name} is null"
    if "uri" in names:
        empty = pc.equal(pc.utf8_length(batch.column("uri")), 0).to_numpy(zero_copy_only=False)
        if (row := _first(empty)) is not None:
            return row, "uri is empty"
    if "status" not in names:
        return None
    status = batch.column("status")
    known = pc.is_in(status, pa.array([STATUS_OK, STATUS_ERROR])).to_numpy(zero_copy_only=False)
    if (row := _first(~known)) is not None:
        return row, f"status {status[row].as_py()!r}; expected {STATUS_OK!r} or {STATUS_ERROR!r}"
    ok = pc.equal(status, STATUS_OK).to_numpy(zero_copy_only=False)
    for name in ("width", "height"):
        if name in names:
            side = pc.fill_null(batch.column(name), 0).to_numpy(zero_copy_only=False)
            bad = ok & ((side < 1) | (side > MAX_IMAGE_SIDE))
            if (row := _first(bad)) is not None:
                value = batch.column(name)[row].as_py()
                return row, f"an ok row with {name} {value}; expected 1 to {MAX_IMAGE_SIDE:,}"
    if "persons" in names:
        null = batch.column("persons").is_null().to_numpy(zero_copy_only=False)
        if (row := _first(ok & null)) is not None:
            return row, "an ok row whose persons are null"
    return None


def _finite_persons(flat: pa.StructArray) -> np.ndarray:
    """``[n]`` bool: the persons of ``flat`` whose numbers are all present and finite."""
    keep = flat.is_valid().to_numpy(zero_copy_only=False)
    for name, width in _PERSON_NUMBERS:
        column = pc.struct_field(flat, name)
        present = column.is_valid().to_numpy(zero_copy_only=False)
        if width > 1:
            values = column.values.slice(column.offset * width, len(column) * width)
            numbers = values.to_numpy(zero_copy_only=False).reshape(-1, width)
        else:
            numbers = column.to_numpy(zero_copy_only=False).reshape(-1, 1)
        keep &= present & np.isfinite(numbers.astype(np.float64)).all(axis=1)
    return keep


def drop_non_finite_persons(persons: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """``persons`` (a list<struct> column) without the persons holding a missing or
    non-finite number, and per row how many were dropped."""
    lengths = pc.fill_null(pc.list_value_length(persons), 0).to_numpy(zero_copy_only=False)
    dropped = np.zeros(len(persons), np.int64)
    flat = pc.list_flatten(persons)
    if len(flat) == 0:
        return persons, dropped
    keep = _finite_persons(flat)
    if keep.all():
        return persons, dropped
    rows = np.repeat(np.arange(len(persons)), lengths)
    dropped = np.bincount(rows[~keep], minlength=len(persons))
    offsets = np.concatenate([[0], np.cumsum(lengths - dropped)]).astype(np.int32)
    kept = pa.ListArray.from_arrays(
        pa.array(offsets), flat.filter(pa.array(keep)), type=persons.type, mask=persons.is_null()
    )
    return kept, dropped


class JobParts:
    """A job's part files (``OUTPUT/JOB_ID`` or its ``annotations/``), checked and read.

    Construction lists the files and reads every footer (``columns`` must be there with
    their types); each read checks the rows. ``report`` says what was left out.
    """

    def __init__(
        self,
        job_uri: str,
        storage: StorageSpec,
        columns: Sequence[str],
        allow_partial: bool = False,
    ) -> None:
        self.job_uri = job_uri
        self.allow_partial = allow_partial
        self.fs, self.files = job_part_files(job_uri, storage)
        self.report = PartsReport(files=len(self.files))
        self._skipped: set[str] = set()  # paths; the report names them as users know them
        self._dropped: dict[str, tuple[int, str | None]] = {}
        for path in self.files:
            self.run(lambda path=path: self._check_footer(path, columns))

    def _check_footer(self, path: str, columns: Sequence[str]) -> None:
        if path in self._skipped:
            return
        with self._reading(path), self.fs.open(path, "rb") as fh:
            schema = pq.ParquetFile(fh).schema_arrow
        problem = schema_problem(schema, columns)
        if problem:
            raise self._error(path, problem)

    def _name(self, path: str) -> str:
        """``path`` as users know it: a local path, or the URI with its scheme."""
        protocols = self.fs.protocol if isinstance(self.fs.protocol, tuple) else (self.fs.protocol,)
        return path if "file" in protocols else self.fs.unstrip_protocol(path)

    def _error(self, path: str, reason: str) -> PartFileError:
        return PartFileError(path, reason, self._name(path))

    @contextmanager
    def _reading(self, path: str) -> Iterator[None]:
        """Turn a failure to read ``path`` (truncated, another format, an I/O error) into
        ``PartFileError`` naming it. A store that cannot be reached is not a bad file: that
        is ``StorageError``'s line, which ``allow_partial`` does not accept."""
        try:
            yield
        except JobSetupError:
            raise
        except Exception as exc:
            if is_storage_failure(exc) and not isinstance(exc, OSError):
                raise storage_failure(self._name(path), "read", exc) from exc
            if not isinstance(exc, OSError | ValueError | pa.ArrowException):
                raise
            text = (str(exc).strip().splitlines() or [""])[0][:200]
            raise self._error(path, f"cannot be read: {type(exc).__name__}: {text}") from exc

    def run(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, a whole pass over the files. With ``allow_partial`` a file that
        fails is set aside and the pass made again without it, so every pass (and the file
        written from it) sees the same rows; otherwise the failure stops the command."""
        while True:
            try:
                return attempt()
            except PartFileError as exc:
                if not self.allow_partial or exc.path in self._skipped:
                    raise
                self._skipped.add(exc.path)
                self.report.skipped[self._name(exc.path)] = exc.reason
                self._dropped.pop(exc.path, None)
                self._count_dropped()

    def _files(self) -> list[str]:
        return [p for p in self.files if p not in self._skipped]

    def _checked(self, batch: pa.RecordBatch, path: str, first_row: int) -> pa.RecordBatch:
        problem = _row_problem(batch)
        if problem is not None:
            row, rule = problem
            raise self._error(path, f"row {first_row + row}: {rule}")
        if "persons" not in batch.schema.names:
            return batch
        persons, dropped = drop_non_finite_persons(batch.column("persons"))
        if dropped.any():
            before, where = self._dropped.get(path, (0, None))
            where = where or f"{self._name(path)} row {first_row + _first(dropped > 0)}"
            self._dropped[path] = (before + int(dropped.sum()), where)
            self._count_dropped()
            index = batch.schema.get_field_index("persons")
            batch = batch.set_column(index, batch.schema.field(index), persons)
        return batch

    def _count_dropped(self) -> None:
        self.report.persons_non_finite = sum(n for n, _ in self._dropped.values())
        firsts = [where for _, where in self._dropped.values() if where]
        self.report.first_non_finite = firsts[0] if firsts else None

    def batches(self, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """``columns`` of every row, checked, one record batch at a time (memory: one batch).

        Raises:
            PartFileError: a file that cannot be read or a row that breaks a rule.
        """
        for path in self._files():
            self._dropped.pop(path, None)  # counted again on this pass
            with self._reading(path):
                fh = self.fs.open(path, "rb")
            try:
                with self._reading(path):
                    reader = pq.ParquetFile(fh).iter_batches(batch_rows, columns=list(columns))
                first_row = 0
                while True:
                    # Only the read is in _reading: a failure of the caller's own work
                    # (writing the export) must not pass for an unreadable part file.
                    with self._reading(path):
                        batch = next(reader, None)
                    if batch is None:
                        break
                    yield self._checked(batch, path, first_row)
                    first_row += batch.num_rows
            finally:
                fh.close()

    def table(self, columns: Sequence[str]) -> pa.Table:
        """``columns`` of every row as one table, checked (a whole-job read, for scoring)."""
        tables = []
        for path in self._files():
            self._dropped.pop(path, None)
            with self._reading(path):
                table = read_part_file(self.fs, path, list(columns))
            batches, first_row = [], 0
            for batch in table.to_batches():
                batches.append(self._checked(batch, path, first_row))
                first_row += batch.num_rows
            tables.append(pa.Table.from_batches(batches, schema=table.schema))
        if not tables:
            return ANNOTATION_SCHEMA.empty_table().select(list(columns))
        return pa.concat_tables(tables)

"""A job's image URIs as Ray datasets, so the driver never holds them.

A manifest is read by Ray Data tasks in blocks. De-duplicating it and leaving out the
URIs that earlier runs already wrote (resume) are one hash aggregation by URI: every URI,
from the inputs and from the job's part files, is tagged with two flags, and grouping by
URI keeps one row per URI with ``listed`` (among the inputs) and ``written`` (in a part
file). The inputs to do are the rows listed and not written: a left anti-join. The
aggregation runs as Ray Data's task-based hash shuffle (map and reduce tasks, no actors),
so it needs no CPUs held for its lifetime and cannot starve the job on a small machine.
``Dataset.join`` would do the anti-join too, but in Ray 2.60 it needs ``polars`` and the
aggregation de-duplicates in the same pass.

Counts come back as one small summary row per block, added up on the driver: the driver's
memory grows with the number of blocks, never with the number of URIs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import ray
from ray.data import Dataset
from ray.data.aggregate import Max

from pipeline.store.sink import read_part_file
from pipeline.store.storage import Manifest, absolute_if_local, filesystem_for
from schemas.spec import StorageSpec

LISTED = "listed"
WRITTEN = "written"
# A URI with a scheme of two or more characters (s3://, gs://, file:, ...): never a relative
# local path. A one-letter "scheme" is a drive letter (uri_scheme), so it does not count.
_SCHEME_PREFIX = r"^[A-Za-z][A-Za-z0-9+.\-]+:"
# Reading a job's part files: a few files per task, and not more tasks than this (also the
# most tasks a Parquet manifest's row groups are read by).
PART_FILES_PER_BLOCK = 4
MAX_PART_FILE_BLOCKS = 200
# Rows per batch when reading a Parquet manifest's row group.
MANIFEST_BATCH_ROWS = 65_536
Summary = dict[str, int | str | None]


def clean_uris(batch: pa.Table, base_dir: str, text: bool) -> pa.Table:
    """A manifest block's ``uri`` column as it will be processed.

    Nulls and empty entries are dropped; for a text manifest (``text``) lines are stripped
    and ``#`` comments dropped too. Relative local paths are made absolute against
    ``base_dir``, the driver's working directory (``absolute_if_local``).
    """
    uris = pc.cast(batch.column("uri"), pa.string())
    if text:
        uris = pc.utf8_trim_whitespace(uris)
        keep = pc.and_(pc.not_equal(uris, ""), pc.invert(pc.starts_with(uris, "#")))
    else:
        keep = pc.not_equal(uris, "")
    uris = pc.filter(uris, pc.fill_null(keep, False))
    relative = pc.invert(
        pc.or_(pc.starts_with(uris, "/"), pc.match_substring_regex(uris, _SCHEME_PREFIX))
    )
    if pc.any(relative).as_py():  # rare: most manifests hold absolute paths or URIs
        pairs = zip(uris.to_pylist(), relative.to_pylist(), strict=True)
        uris = pa.array([absolute_if_local(u, base_dir) if r else u for u, r in pairs], pa.string())
    return pa.table({"uri": uris})


def _read_row_groups(batch: pa.Table, uri: str, storage: StorageSpec) -> Iterator[pa.Table]:
    fs, path = filesystem_for(uri, storage)
    with fs.open(path, "rb") as fh:
        parquet = pq.ParquetFile(fh)
        for group in batch.column("row_group").to_pylist():
            for records in parquet.iter_batches(
                batch_size=MANIFEST_BATCH_ROWS, row_groups=[group], columns=["uri"]
            ):
                yield pa.Table.from_batches([records])


def read_parquet_manifest(manifest: Manifest, storage: StorageSpec) -> Dataset:
    """The ``uri`` column of a Parquet manifest: one task per row group (the footer the driver
    checked says how many), each reading it in batches of ``MANIFEST_BATCH_ROWS``.

    Not ``ray.data.read_parquet``: in Ray 2.60 every such read starts 32 footer-reading
    actors, about 6 s and as many worker processes on a 2-core machine, twice per job (plan
    and statistics), to learn what the driver's footer read already knows.
    """
    groups = ray.data.from_items(
        [{"row_group": i} for i in range(manifest.row_groups)],
        override_num_blocks=max(1, min(manifest.row_groups, MAX_PART_FILE_BLOCKS)),
    )
    return groups.map_batches(
        _read_row_groups,
        fn_kwargs={"uri": manifest.uri, "storage": storage},
        batch_format="pyarrow",
        batch_size=1,
    )


def read_manifest_uris(manifest: Manifest, storage: StorageSpec) -> Dataset:
    """A checked manifest's URIs (column ``uri``, see ``clean_uris``), read by Ray Data tasks
    through the job's filesystem: Parquet only its ``uri`` column (``read_parquet_manifest``),
    CSV its ``uri`` column as text (``000123`` stays ``000123``), a text manifest one URI per
    line."""
    import pyarrow.csv as pacsv

    fs, path = filesystem_for(manifest.uri, storage)
    if manifest.format == "parquet":
        ds = read_parquet_manifest(manifest, storage)
    elif manifest.format == "csv":
        options = pacsv.ConvertOptions(include_columns=["uri"], column_types={"uri": pa.string()})
        ds = ray.data.read_csv(path, filesystem=fs, partitioning=None, convert_options=options)
    else:
        ds = ray.data.read_text(path, filesystem=fs, drop_empty_lines=True)
        ds = ds.rename_columns({"text": "uri"})
    return ds.map_batches(
        clean_uris,
        fn_kwargs={"base_dir": os.getcwd(), "text": manifest.format == "text"},
        batch_format="pyarrow",
        batch_size=None,
    )


def _read_part_files(
    batch: pa.Table,
    annotations_uri: str,
    storage: StorageSpec,
    columns: list[str],
    transform: Callable[[pa.Table], pa.Table] | None,
) -> Iterator[pa.Table]:
    fs, _ = filesystem_for(annotations_uri, storage)
    for path in batch.column("path").to_pylist():
        table = read_part_file(fs, path, columns)
        yield transform(table) if transform else table


def read_part_files(
    annotations_uri: str,
    files: Sequence[str],
    storage: StorageSpec,
    columns: list[str],
    transform: Callable[[pa.Table], pa.Table] | None = None,
) -> Dataset:
    """``columns`` of the job's part ``files`` (``sink.part_files``), one file at a time per
    task, optionally mapped by ``transform``; older files are read in today's schema."""
    blocks = min(math.ceil(len(files) / PART_FILES_PER_BLOCK), MAX_PART_FILE_BLOCKS)
    paths = ray.data.from_items([{"path": p} for p in files], override_num_blocks=max(1, blocks))
    return paths.map_batches(
        _read_part_files,
        fn_kwargs={
            "annotations_uri": annotations_uri,
            "storage": storage,
            "columns": columns,
            "transform": transform,
        },
        batch_format="pyarrow",
        batch_size=1,
    )


def tag_uris(batch: pa.Table, listed: int, written: int) -> pa.Table:
    """``uri`` with constant int8 ``listed`` and ``written`` flags."""
    n = batch.num_rows
    return pa.table(
        {
            "uri": batch.column("uri"),
            LISTED: pa.array(np.full(n, listed, np.int8)),
            WRITTEN: pa.array(np.full(n, written, np.int8)),
        }
    )


def flag_uris(inputs: Dataset, written: Dataset | None, num_partitions: int) -> Dataset:
    """One row per distinct URI of ``inputs`` and ``written`` (both with a ``uri`` column),
    with its int8 ``listed`` and ``written`` flags: a hash aggregation by URI into
    ``num_partitions`` partitions."""
    flagged = inputs.map_batches(
        tag_uris, fn_kwargs={"listed": 1, "written": 0}, batch_format="pyarrow", batch_size=None
    )
    if written is not None:
        flagged = flagged.union(
            written.map_batches(
                tag_uris,
                fn_kwargs={"listed": 0, "written": 1},
                batch_format="pyarrow",
                batch_size=None,
            )
        )
    return flagged.groupby("uri", num_partitions=num_partitions).aggregate(
        Max(LISTED, alias_name=LISTED), Max(WRITTEN, alias_name=WRITTEN)
    )


def _todo_mask(batch: pa.Table) -> pa.Array:
    return pc.and_(pc.equal(batch.column(LISTED), 1), pc.equal(batch.column(WRITTEN), 0))


def todo_rows(batch: pa.Table) -> pa.Table:
    """The ``uri`` of the rows listed and not written."""
    if not batch.num_rows:  # an aggregation over no rows yields a block without columns
        return pa.table({"uri": pa.array([], pa.string())})
    return pa.table({"uri": pc.filter(batch.column("uri"), _todo_mask(batch))})


def todo_uris(flags: Dataset) -> Dataset:
    """The URIs of ``flags`` (from ``flag_uris``) still to do: listed and not written."""
    return flags.map_batches(todo_rows, batch_format="pyarrow", batch_size=None)


def flag_summary(batch: pa.Table) -> pa.Table:
    """One row: how many URIs of ``batch`` are listed, and how many of those are to do."""
    if not batch.num_rows:
        return summary_table({"listed": 0, "todo": 0})
    listed = pc.equal(batch.column(LISTED), 1)
    return summary_table(
        {
            "listed": int(pc.sum(listed).as_py() or 0),
            "todo": int(pc.sum(_todo_mask(batch)).as_py() or 0),
        }
    )


@dataclass(frozen=True)
class InputCounts:
    """Distinct input URIs, and how many of them no part file holds yet."""

    listed: int
    todo: int

    @property
    def written(self) -> int:
        return self.listed - self.todo


def count_flags(flags: Dataset) -> InputCounts:
    """``InputCounts`` of ``flags`` (from ``flag_uris``), summed from per-block summaries."""
    totals = summarise(flags, flag_summary)
    return InputCounts(listed=int(totals.get("listed") or 0), todo=int(totals.get("todo") or 0))


def summary_table(summary: Mapping[str, int | str | None]) -> pa.Table:
    """One summary row: int64 counts, string examples (null when there is none)."""

    def column(value: int | str | None) -> pa.Array:
        return pa.array(
            [value], pa.string() if value is None or isinstance(value, str) else pa.int64()
        )

    return pa.table({key: column(value) for key, value in summary.items()})


def merge_summaries(rows: Sequence[Mapping[str, Any]]) -> Summary:
    """Per-block summaries merged: counts added, examples the smallest non-null string."""
    merged: Summary = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, str) or value is None:
                current = merged.get(key)
                candidates = [v for v in (current, value) if isinstance(v, str)]
                merged[key] = min(candidates) if candidates else None
            else:
                merged[key] = int(merged.get(key) or 0) + int(value)
    return merged


def summarise(ds: Dataset, fn: Callable[[pa.Table], pa.Table]) -> Summary:
    """``fn`` (a batch → one ``summary_table`` row) over every batch of ``ds`` in Ray tasks,
    merged on the driver: O(blocks) rows reach it, never the data."""
    rows = ds.map_batches(fn, batch_format="pyarrow", batch_size=None).take_all()
    return merge_summaries(rows)

"""The per-block steps of the distributed URI plan, called directly on Arrow tables (no Ray)."""

from __future__ import annotations

import pyarrow as pa

from pipeline.store.sources import (
    clean_uris,
    flag_summary,
    merge_summaries,
    summary_table,
    tag_uris,
    todo_rows,
)


def uris(*values: str | None) -> pa.Table:
    return pa.table({"uri": pa.array(values, pa.string())})


def test_text_lines_are_stripped_and_blanks_and_comments_dropped():
    batch = uris("  /a.jpg \r", "", "   ", "# comment", "  # indented comment", "s3://b/c.jpg")
    assert clean_uris(batch, "/cwd", text=True).column("uri").to_pylist() == [
        "/a.jpg",
        "s3://b/c.jpg",
    ]


def test_table_entries_are_kept_verbatim_but_nulls_and_empties_dropped():
    batch = uris("/spaced.jpg ", None, "", "#hash.jpg")
    assert clean_uris(batch, "/cwd", text=False).column("uri").to_pylist() == [
        "/spaced.jpg ",
        "/cwd/#hash.jpg",  # a file name, not a comment
    ]


def test_relative_local_paths_resolve_against_the_drivers_folder_and_uris_stay():
    batch = uris("000123", "sub/../x.jpg", "/abs.jpg", "s3://b/k.jpg", "file:///f.jpg", "a::b.jpg")
    assert clean_uris(batch, "/driver/cwd", text=False).column("uri").to_pylist() == [
        "/driver/cwd/000123",
        "/driver/cwd/x.jpg",
        "/abs.jpg",
        "s3://b/k.jpg",
        "file:///f.jpg",
        "/driver/cwd/a::b.jpg",
    ]


def test_todo_is_listed_and_not_written():
    flags = pa.table(
        {
            "uri": ["listed", "written", "both", "stale"],
            "listed": pa.array([1, 0, 1, 0], pa.int8()),
            "written": pa.array([0, 1, 1, 1], pa.int8()),
        }
    )
    assert todo_rows(flags).column("uri").to_pylist() == ["listed"]
    assert flag_summary(flags).to_pylist() == [{"listed": 2, "todo": 1}]
    tagged = tag_uris(uris("a", "b"), listed=1, written=0)
    assert tagged.column("listed").type == pa.int8()
    assert tagged.to_pylist() == [
        {"uri": "a", "listed": 1, "written": 0},
        {"uri": "b", "listed": 1, "written": 0},
    ]


def test_block_summaries_add_counts_and_keep_the_smallest_example():
    rows = [
        summary_table({"n": 2, "example": "s3://b/z.jpg"}).to_pylist()[0],
        summary_table({"n": 3, "example": None}).to_pylist()[0],
        summary_table({"n": 0, "example": "s3://b/a.jpg"}).to_pylist()[0],
    ]
    assert merge_summaries(rows) == {"n": 5, "example": "s3://b/a.jpg"}
    assert merge_summaries([]) == {}


def test_an_empty_aggregation_block_has_nothing_to_do():
    empty = pa.table({})
    assert todo_rows(empty).num_rows == 0
    assert flag_summary(empty).to_pylist() == [{"listed": 0, "todo": 0}]

"""One source for every record: counters and error kinds are declared once, in schemas/output.py,
and the Arrow schema, the statistics, the filter's counters, the code and the README agree."""

from __future__ import annotations

import ast
import re
from dataclasses import fields

import numpy as np

from model.stage_data import FilterCounts
from pipeline.graph.batches import with_internal_errors
from pipeline.graph.tasks import decode_batch
from schemas.output import (
    ANNOTATION_SCHEMA,
    COUNT_DESCRIPTIONS,
    COUNT_FIELDS,
    COUNTERS,
    ERROR_KINDS,
    FILTER_COUNT_FIELDS,
    FILTER_COUNTERS,
    STATUS_ERROR,
    JobStats,
)
from schemas.spec import DecodeSpec, StorageSpec
from tests.helpers import REPO_ROOT


def test_counters_are_declared_once_and_every_record_follows_them():
    assert tuple(c.name for c in COUNTERS) == COUNT_FIELDS
    assert len(set(COUNT_FIELDS)) == len(COUNT_FIELDS)
    assert tuple(c.name for c in FILTER_COUNTERS) == FILTER_COUNT_FIELDS
    assert COUNT_FIELDS[: len(FILTER_COUNT_FIELDS)] == FILTER_COUNT_FIELDS
    # The filter's record: exactly the filter counters, in order.
    assert tuple(f.name for f in fields(FilterCounts)) == FILTER_COUNT_FIELDS
    assert tuple(FilterCounts().as_dict()) == FILTER_COUNT_FIELDS
    # The row's counts struct: exactly the counters, in order.
    counts_type = ANNOTATION_SCHEMA.field("counts").type
    assert tuple(counts_type.field(i).name for i in range(counts_type.num_fields)) == COUNT_FIELDS


def test_job_stats_carries_every_counter_with_its_declared_description():
    stats_fields = JobStats.model_fields
    for name in COUNT_FIELDS:
        assert name in stats_fields, name
        assert stats_fields[name].description == COUNT_DESCRIPTIONS[name], name
    # No other JobStats field reuses a counter description (a stale copy would).
    others = {n for n, f in stats_fields.items() if f.description in COUNT_DESCRIPTIONS.values()}
    assert others == set(COUNT_FIELDS)


def test_every_job_stats_field_has_a_description():
    missing = [n for n, f in JobStats.model_fields.items() if not f.description]
    assert not missing, missing


def test_dropped_low_score_says_it_also_counts_the_max_persons_cut():
    assert "max_persons" in COUNT_DESCRIPTIONS["dropped_low_score"]


def _error_kinds_in_source() -> set[str]:
    """String literals the pipeline passes as an error kind: ``ImageError("kind", ...)``."""
    kinds = set()
    for path in (REPO_ROOT / "pipeline").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "ImageError"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                kinds.add(node.args[0].value)
    return kinds


def test_every_error_kind_the_code_produces_is_declared():
    produced = _error_kinds_in_source()
    assert produced and produced <= set(ERROR_KINDS), produced - set(ERROR_KINDS)
    # A failure inside a stage, and a URI that cannot even be opened.
    batch = {
        "status": np.array(["ok"], object),
        "error_kind": np.array([""], object),
        "error_message": np.array([""], object),
    }
    failed = with_internal_errors(batch, {0: RuntimeError("boom")}, "test")
    assert failed["status"][0] == STATUS_ERROR and failed["error_kind"][0] in ERROR_KINDS
    rows = decode_batch(
        {"uri": np.array(["nosuchscheme-xyz://bucket/a.jpg"])}, DecodeSpec(), StorageSpec()
    )
    assert rows["status"][0] == STATUS_ERROR and rows["error_kind"][0] in ERROR_KINDS


def test_readme_lists_exactly_the_error_kinds():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    row = next(line for line in readme.splitlines() if line.startswith("| `error_kind` |"))
    listed = re.findall(r"`([a-z_]+)`", row.split("|")[3].split(";")[0])
    assert tuple(listed) == ERROR_KINDS

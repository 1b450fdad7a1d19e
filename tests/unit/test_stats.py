"""The exactly-once proof in the statistics."""

from __future__ import annotations

from pipeline.stats import exactly_once_violations


def test_exactly_once_holds():
    assert exactly_once_violations(["a", "b"], ["b", "a"]) == []


def test_missing_and_duplicated_images_are_internal_errors():
    notes = exactly_once_violations(["a", "b", "c"], ["a", "a", "b"])
    assert len(notes) == 2 and all(n.startswith("[internal]") for n in notes)
    assert "1 image(s) without a row, e.g. c" in notes[0]
    assert "1 image(s) with several rows, e.g. a" in notes[1]

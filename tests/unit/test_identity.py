"""A job's fingerprint: what changes results is in it, what doesn't is not; changed reruns refused."""

from __future__ import annotations

import pytest

from pipeline.store.identity import (
    SettingsChangedError,
    fingerprint_changes,
    job_fingerprint,
    new_run,
    read_runs,
    write_runs,
)
from schemas.spec import JobSpec, StorageSpec
from tests.helpers import StageWeights

WEIGHTS = {
    "stage1": StageWeights("bundled:a.pt", "aa" * 32),
    "refiner": StageWeights("x", "bb" * 32),
}


def spec(**changes) -> JobSpec:
    return JobSpec.parse({"inputs": ["/data/a.jpg"], "output": "/tmp/out", **changes})


def test_settings_that_shape_rows_change_the_fingerprint():
    base = job_fingerprint(spec(), WEIGHTS)
    for changed in (
        {"filter": {"mode": "none"}},
        {"filter": {"duplicate_oks": 0.6}},
        {"decode": {"max_side": 512}},
        {"proposals_per_image": 50},
        {"peaks_per_keypoint": 10},
        {"flip_test": True},
    ):
        assert job_fingerprint(spec(**changed), WEIGHTS) != base, changed
    retrained = {**WEIGHTS, "refiner": StageWeights("x", "cc" * 32)}
    assert job_fingerprint(spec(), retrained) != base


def test_inputs_resources_and_retries_do_not():
    base = job_fingerprint(spec(), WEIGHTS)
    same = spec(
        inputs=["/data/a.jpg", "/data/b.jpg"],
        stage1={"batch_size": 32, "actors": 2},
        decode={"retries": 7, "retry_backoff_s": 2.0},
        device="cpu",
    )
    assert job_fingerprint(same, WEIGHTS) == base
    moved = {**WEIGHTS, "stage1": StageWeights("s3://b/moved.pt", "aa" * 32)}
    assert job_fingerprint(spec(), moved) == base


def test_changes_name_each_field_with_old_and_new_value():
    before = job_fingerprint(spec(), WEIGHTS)
    after = job_fingerprint(spec(filter={"mode": "none"}, flip_test=True), WEIGHTS)
    assert fingerprint_changes(before, after) == [
        "filter.mode: 'coarse' → 'none'",
        "flip_test: False → True",
    ]
    assert fingerprint_changes({"a": 1}, {"b": 2}) == ["a: 1 → (absent)", "b: (absent) → 2"]


def test_a_rerun_with_other_settings_is_refused_unless_allowed():
    first = new_run([], job_fingerprint(spec(), WEIGHTS), 0, "t0", allow_changes=False)
    assert first.settings_changed == []
    same = new_run([first], job_fingerprint(spec(), WEIGHTS), 1, "t1", allow_changes=False)
    assert same.settings_changed == []
    other = job_fingerprint(spec(filter={"mode": "none"}), WEIGHTS)
    with pytest.raises(SettingsChangedError) as err:
        new_run([first, same], other, 2, "t2", allow_changes=False)
    assert "filter.mode: 'coarse' → 'none'" in str(err.value)
    assert "--allow-changed-settings" in str(err.value)
    allowed = new_run([first, same], other, 2, "t2", allow_changes=True)
    assert allowed.settings_changed == ["filter.mode: 'coarse' → 'none'"]
    # The next run compares with the latest settings, not the first.
    assert new_run([first, same, allowed], other, 3, "t3", False).settings_changed == []


def test_runs_round_trip_and_a_damaged_record_is_an_error(tmp_path):
    uri = str(tmp_path / "job" / "runs.json")
    assert read_runs(uri, StorageSpec()) == []
    run = new_run([], job_fingerprint(spec(), WEIGHTS), 0, "t0", allow_changes=False)
    write_runs(uri, [run], StorageSpec())
    assert read_runs(uri, StorageSpec()) == [run]
    (tmp_path / "job" / "runs.json").write_text("{not json")
    with pytest.raises(ValueError, match="run record is unreadable"):
        read_runs(uri, StorageSpec())
